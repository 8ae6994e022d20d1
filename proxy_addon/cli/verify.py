"""``cassette verify``: every file parses, fits the format, and holds no secret."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from proxy_addon import formats, redact
from proxy_addon.cli.common import dir_option
from proxy_addon.model import CassetteError, Recording
from proxy_addon.store.layout import iter_cassette_files


_SECRET_PATTERNS = [
    ("a bearer token", re.compile(rb"[Bb]earer\s+(?!<redacted>)[A-Za-z0-9._~+/=-]{8,}")),
    ("an sk-... API key", re.compile(rb"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{16,}")),
    ("a Google API key", re.compile(rb"\bAIza[0-9A-Za-z_-]{35}\b")),
]


def _env_secrets() -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in os.environ.items()
            if re.fullmatch(r".*_API_KEY|.*_API_TOKEN", name) and len(value) >= 8]


def secret_findings(raw: bytes, rec: Recording | None) -> list[str]:
    """Why a file leaks a secret, if it does: patterns, live env keys, unredacted fields."""
    found = [f"contains {what}" for what, rx in _SECRET_PATTERNS if rx.search(raw)]
    found += [f"contains the value of ${name}" for name, value in _env_secrets() if value in raw]
    if rec is not None:
        for name, value in rec.request.headers.items():
            if name in redact.SECRET_HEADERS and value != redact.REDACTED:
                found.append(f"request header {name} is not redacted")
        for resp in rec.responses:
            for name, value in resp.headers:
                if name.lower() in redact.SECRET_HEADERS and value != redact.REDACTED:
                    found.append(f"response header {name} is not redacted")
        if redact.redact_url(rec.request.url) != rec.request.url:
            found.append("request URL has a secret query parameter or credentials")
        body = rec.request.body
        if body is not None and body.kind == "json" and redact.redact_body(body.value) != body.value:
            found.append("request body has an unredacted secret field")
    return found


@click.command("verify")
@dir_option
def verify_command(cassette_dir: Path) -> None:
    """Check every file parses, fits the format, and holds no secret; exit 1 if not.

    \b
    Example (CI or pre-commit): cassette verify --dir cassettes
    """
    if not cassette_dir.is_dir():
        raise click.UsageError(f"no cassette directory at {cassette_dir}")
    bad = 0
    total = 0
    for path in iter_cassette_files(cassette_dir):
        total += 1
        raw = b""
        rec = None
        problems: list[str] = []
        try:
            raw = path.read_bytes()
            rec = formats.loads(raw, path)
        except OSError as e:
            problems.append(f"cannot read ({e.strerror})")
        except CassetteError as e:
            problems.append(e.reason)
        problems += secret_findings(raw, rec)
        if problems:
            bad += 1
            for p in problems:
                click.echo(f"{path}: {p}")
    click.echo(f"{total} files checked, {bad} bad", err=bad > 0)
    if bad:
        sys.exit(1)
