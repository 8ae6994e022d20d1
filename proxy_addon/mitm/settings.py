"""The options as the hooks read them: one frozen ``Settings``, built and checked by
``options.py`` whenever an option changes, kept on the hub (``state.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from proxy_addon import formats
from proxy_addon.matching.canonical import DEFAULT_RULES, Rules
from proxy_addon.runner.interface import DEFAULT_INTERFACE
from proxy_addon.serving.incidental import BUILT_IN_ONLY, IncidentalRequests
from proxy_addon.store.cache import BUDGET_BYTES


@dataclass(frozen=True, slots=True)
class Settings:
    """The options as the hooks use them, checked and parsed once."""

    mode: str = "replay"
    pace: float = 0.0
    rules: Rules = DEFAULT_RULES  # what matching leaves out and replaces
    max_age: timedelta | None = None
    max_age_text: str = ""
    stale_policy: str = "warn"
    max_file_bytes: int = formats.MAX_FILE_BYTES
    cache_bytes: int = BUDGET_BYTES
    summary_path: str = ""
    interface: str = DEFAULT_INTERFACE  # which interface started the proxy: its hints' spelling
    incidental: IncidentalRequests = BUILT_IN_ONLY  # requests not under test
    index_cache: Path | None = None  # the folder the index is saved in between runs; None: off
