"""Entry point for ``mitmdump -s proxy_addon/addon.py``: the addon lives in ``proxy_addon.mitm``.

mitmdump runs this file as a script (outside ``sys.modules``); everything else is a normal
package module, so it can be imported, type-checked and tested as one.
"""

from proxy_addon.mitm import make_addons

addons = make_addons()
