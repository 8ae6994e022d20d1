"""Where cassettes live in the directory: names that are safe, readable and never collide.

``<cassette_dir>/<host>/<path...>/<model or method>-<key12>.json`` for shared cassettes, the
same under ``by-test/<test dir>/`` for a test's own. Every name is built from text that has
passed the secret rules first (a key in a test's parameters, a model name, a host), then
sanitised, and a path is checked to stay inside the directory whatever the request said.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from proxy_addon.matching import canonical
from proxy_addon.matching.canonical import CanonicalRequest
from proxy_addon.model import RecordedRequest
from proxy_addon.redaction.secret_rules import BUILT_IN, Secrets

log = logging.getLogger("proxy_addon")

# Per-test cassettes live in <cassette_dir>/by-test/<test dir>/; everything else is shared.
BY_TEST_DIR = "by-test"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HASHED = re.compile(r"-[0-9a-f]{12}$")


def safe_segment(text: str, limit: int = 64) -> str:
    """A file-name-safe version of ``text``: never empty, never ``.``/``..``, no separators."""
    cleaned = _UNSAFE.sub("_", text).strip("._")[:limit]
    return cleaned or "_"


def _unflatten(flat: str) -> str:
    """The pytest node id a readable name stands for: the parts up to the first ``*.py`` are
    the file's path, the others its ``::`` parts (the inverse of the flattening below)."""
    parts = flat.split("__")
    for i, part in enumerate(parts):
        if part.endswith(".py"):
            return "/".join(parts[: i + 1]) + "".join("::" + p for p in parts[i + 1 :])
    return "::".join(parts)


def per_test_dir(name: str, secrets: Secrets = BUILT_IN) -> str:
    """A one-directory name for a test's cassette, readable from its pytest node id:
    ``tests/test_app.py::test_joke`` -> ``tests__test_app.py__test_joke``.

    A secret in ``name`` (``test_x[sk-...]``: a test parametrised with the key it sends) is
    replaced first, as ``secrets`` replace it in a file, so the name holds ``redacted`` and a
    hash of ``test_x[<redacted>]``: the same on every run, whichever key. Otherwise injective:
    the readable form is kept as it is only when it reads back as ``name`` exactly
    (``_unflatten``); otherwise (``test[hello, world]``, ``[é]``, a long id) it ends with a
    hash of ``name``, and no name kept as it is ends like one."""
    name = secrets.redacted(name)
    flat = name.replace("::", "__").replace("/", "__")
    cleaned = safe_segment(flat, 100)
    if cleaned == flat and _unflatten(flat) == name and not _HASHED.search(flat):
        return cleaned
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


@functools.lru_cache(maxsize=16)
def _per_test_prefix(root: Path | str) -> str:
    return os.path.join(root, BY_TEST_DIR, "")


def per_test_dir_of(root: Path | str, path: Path | str) -> str | None:
    """The test directory a cassette file belongs to, or None for a shared one."""
    prefix = _per_test_prefix(root)
    text = os.fspath(path)
    if not text.startswith(prefix):
        return None
    rest = text[len(prefix) :].split(os.sep)
    return rest[0] if len(rest) > 2 else None


def origin_of(request: RecordedRequest) -> str:
    """The host a request was recorded for, normalised as matching compares hosts."""
    parts = urlsplit(request.url)
    return canonical.comparable_host(parts.scheme, parts.hostname or "", parts.port)


def model_of(request: RecordedRequest) -> str | None:
    """The model a request asks for: its JSON body's ``model``, else a ``model`` query
    parameter (a Realtime handshake's ``?model=``)."""
    if (
        request.body is not None
        and request.body.kind == "json"
        and isinstance(request.body.value, dict)
    ):
        model = request.body.value.get("model")
        return model if isinstance(model, str) else None
    if "model=" in request.url:
        return next((v for k, v in parse_qsl(urlsplit(request.url).query) if k == "model"), None)
    return None


def layout_path(
    root: Path,
    canon: CanonicalRequest,
    url: str,
    model: str | None,
    tag: str | None = None,
    secrets: Secrets = BUILT_IN,
) -> Path:
    """Where a new cassette goes: ``<host>/<path...>/<model or method>-<key12>[-<tag>].json``.

    Browsable by provider and endpoint in a review; the host and the model pass ``secrets``
    (the path is the request key's, which did), every segment is sanitised, and the result is
    checked to stay inside ``root`` whatever the request said.
    """
    parts = urlsplit(url)
    host = safe_segment(
        secrets.redacted(
            canonical.comparable_host(parts.scheme, parts.hostname or "unknown-host", parts.port)
        )
    )
    model = secrets.redacted(model) if model else model
    segments = [safe_segment(s) for s in canon.path.split("/") if s and s not in (".", "..")][:8]
    stem = safe_segment(model or canon.method.lower(), 48)
    name = f"{stem}-{canon.key()[:12]}" + (f"-{safe_segment(tag, 16)}" if tag else "")
    target = root.joinpath(host, *segments, f"{name}.json")
    if not target.resolve().is_relative_to(root.resolve()):  # defence in depth
        raise ValueError(f"refusing to write outside {root}: {target}")
    return target


def is_cassette_name(relative: str) -> bool:
    """Whether a path under a cassette directory names a cassette: a ``*.json`` with no hidden
    file or directory on its way (temp files are hidden)."""
    parts = relative.replace(os.sep, "/").split("/")
    return parts[-1].endswith(".json") and not any(p.startswith(".") for p in parts)


_NAME = attrgetter("name")


def cassette_files(root: Path | str) -> Iterator[str]:
    """Every cassette under ``root`` (``is_cassette_name``) that is a regular file or a link
    to one, as text, in a stable order (a directory's files, then its subdirectories, by name).
    Text, not ``Path``: indexing 100,000 files pays per object.

    Anything else named like a cassette (a FIFO, a device, a socket, a link to one of those
    or to nothing) is skipped with a warning naming it: opening a FIFO blocks until a writer
    comes, and ``/dev/zero`` never ends. Links to directories are not followed (no loops).
    Whether an entry is a regular file comes from the directory listing itself, so the walk
    costs no system call per file; ``formats.read_bytes`` checks the opened file again."""
    pending = [os.fspath(root)]
    while pending:
        top = pending.pop()
        try:
            with os.scandir(top) as listing:
                found = sorted(listing, key=_NAME)
        except OSError:  # gone, or not readable: as os.walk, nothing under it
            continue
        subdirs = []
        for entry in found:
            if entry.name.startswith("."):  # hidden: temp files, .git
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                elif entry.name.endswith(".json"):
                    if entry.is_file():
                        yield entry.path
                    else:
                        _skipped(entry.path)
            except OSError:  # vanished meanwhile
                continue
        pending.extend(reversed(subdirs))


def _skipped(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        what = "a link to nothing"
    else:
        what = next((name for test, name in _KINDS if test(mode)), "something else")
    log.warning("cassette: skipping %s: it is %s, not a regular file", path, what)


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a link to a directory"),
)


def iter_cassette_files(root: Path) -> Iterator[Path]:
    """``cassette_files`` as paths."""
    return map(Path, cassette_files(root))
