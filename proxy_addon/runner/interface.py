"""The interfaces that start the proxy, and how each spells an option.

A message that tells the user to set an option (a miss: ``Record it with ...``; a missing
directory; an option given twice) must use the spelling of the interface in use: ``--mode auto``
under ``cassette run``, ``--cassette-mode=auto`` under pytest, ``--set cassette_mode=auto`` under
plain mitmdump. The runners tell the addon which interface started it (the ``cassette_interface``
option), and every such message is worded through ``spell``.

The flags named here are those of ``cli/run.py`` and ``pytest_plugin.py``; a test checks that each
one exists there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Interface:
    """How one interface spells an option: its own flag for some (``flags``, ``joiner``
    between the flag and the value), ``set_flag NAME=VALUE`` for the others."""

    name: str  # the value of the cassette_interface option
    label: str  # how the user calls it
    set_flag: str
    joiner: str = " "
    flags: dict[str, str] = field(default_factory=dict)

    def spell(self, option: str, value: str) -> str:
        """How to give ``option`` the value ``value`` in this interface."""
        flag = self.flags.get(option)
        if flag is None:
            return f"{self.set_flag} {option}={value}"
        return f"{flag}{self.joiner}{value}"


_CLI_FLAGS = {
    "cassette_mode": "--mode",
    "cassette_dir": "--dir",
    "cassette_pace": "--pace",
    "cassette_max_age": "--older-than",
}
_PROXY_FLAGS = _CLI_FLAGS | {
    "listen_port": "--port",
    "listen_host": "--listen-host",
    "confdir": "--confdir",
    "mode": "--listeners",
}

INTERFACES: dict[str, Interface] = {
    i.name: i
    for i in (
        Interface("mitmdump", "mitmdump", "--set"),
        Interface("run", "cassette run", "--set", flags=_CLI_FLAGS),
        Interface("proxy", "cassette proxy", "--set", flags=_PROXY_FLAGS),
        Interface(
            "pytest",
            "pytest",
            "--cassette-set",
            "=",
            {
                "cassette_mode": "--cassette-mode",
                "cassette_dir": "--cassette-dir",
                "cassette_pace": "--cassette-pace",
                "cassette_max_age": "--cassette-older-than",
            },
        ),
    )
}
DEFAULT_INTERFACE = "mitmdump"


def spell(interface: str, option: str, value: str) -> str:
    """``option=value`` as the user of ``interface`` writes it (plain mitmdump's ``--set`` for
    an interface not known here)."""
    return INTERFACES.get(interface, INTERFACES[DEFAULT_INTERFACE]).spell(option, value)


def owned(interface: str, given: Mapping[str, str], internal: Iterable[str]) -> dict[str, str]:
    """The options a runner sets itself, each with how: ``given`` from its own flags (option ->
    the value it got), ``internal`` set behind the user's back. ``process.user_options``
    refuses a ``--set`` of any of them, naming both."""
    found = INTERFACES[interface]
    out = {name: f"{found.label} itself" for name in internal}
    out.update({name: found.spell(name, value) for name, value in given.items()})
    return out
