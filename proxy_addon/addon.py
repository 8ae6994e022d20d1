"""Entry point for ``mitmdump -s "$(cassette addon-path)"``: the addon is ``proxy_addon.mitm``'s.

mitmdump runs this file as a script (outside ``sys.modules``); everything else is a normal
package module, so it can be imported, type-checked and tested as one.
"""

from proxy_addon.mitm import make_addons

addons = make_addons()
