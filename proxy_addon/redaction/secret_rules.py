"""What counts as a secret, in three layers: by name (headers, fields at any depth, query
parameters), by value (what the first layer removed, and the credential-like variables of the
process's environment), and by shape (well-known key formats, listed in ``shapes``).

``redact`` applies these rules to a whole recording, and ``matching`` leaves the same things out
of a request's key; nothing here walks a recording. ``Secrets.might_hold`` is the one cheap
test that keeps the common case (a body with no secret in it) free: a single RE2 scan of the
raw bytes, linear in their length, that every later, slower step is behind.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, quote_plus

import re2  # type: ignore[import-untyped]

from proxy_addon.matching.jsonpath import Path, is_path, matches, parse_path
from proxy_addon.redaction.shapes import SHAPES, loose
from proxy_addon.remembered import remembered

REDACTED = "<redacted>"
_FLOW_VALUE = "a value redacted by name in this exchange"
# A known value shorter than this is never searched for: it would match ordinary text.
MIN_VALUE_LENGTH = 8

SECRET_HEADERS: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "x-amz-security-token",  # an AWS STS session token (SigV4)
        "x-amz-signature",
        "ocp-apim-subscription-key",  # Azure AI services, API Management
        "x-functions-key",  # Azure Functions
        "xi-api-key",  # ElevenLabs
        "x-subscription-token",  # Brave Search
    }
)
# Field names that hold a secret wherever they are: JSON keys at any depth, form and multipart
# fields, query parameters. Compared without case, "-" and "_" (``clientSecret`` too).
SECRET_FIELDS: tuple[str, ...] = (
    "api_key",
    "apikey",
    "client_secret",
    "refresh_token",
    "access_token",
    "id_token",
    "password",
    "private_key",
    "secret",
    "session_token",
    "secret_access_key",  # AWS: STS answers' SecretAccessKey, config files
    "aws_secret_access_key",
    "aws_session_token",
    "x-amz-security-token",  # a pre-signed URL's query (SigV4)
    "x-amz-signature",
    "x-amz-credential",
)
# Names that mark a secret in a query string or a form only: as JSON keys they are ordinary
# words (OpenAI's logprobs have a "token", many APIs a "key").
PARAM_ONLY_FIELDS: tuple[str, ...] = (
    "key",
    "token",
    "sig",  # an Azure SAS token's signature
    "signature",
    "subscription-key",  # Azure API Management
)

# Credential-like environment variables: their values are secrets wherever they appear.
_ENV_NAME = re.compile(
    r"(?:^|_)(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|SECRET_KEY|ACCESS_KEY|PRIVATE_KEY|"
    r"ADMIN_KEY|ACCOUNT_KEY|STORAGE_KEY|CONNECTION_STRING)$|^FAL_KEY$|(?:^|_)BEARER_TOKEN(?:_|$)",
    re.IGNORECASE,
)

# The shapes as one pattern for Python's re (each a group ``s<n>``, its kept prefix ``k<n>``),
# and as the one RE2 scan looks for them in raw bytes (looser: a yes only costs a walk).
_SHAPES_RX = re.compile(
    "|".join(
        f"(?P<s{i}>" + (f"(?P<k{i}>{s.keep})" if s.keep else "") + f"{s.pattern})"
        for i, s in enumerate(SHAPES)
    ),
    re.ASCII,
)
_LOOSE_SHAPES: tuple[str, ...] = tuple(loose(s) for s in SHAPES)


def _kept(m: re.Match[str], i: int) -> str:
    """The text before a shape's key that stays (``Bearer `` with one space, a name and its
    ``=``)."""
    kept = m.group(f"k{i}") if SHAPES[i].keep else ""
    return kept.rstrip() + " " if kept[-1:].isspace() else kept


_AUTH_SCHEMES = ("bearer", "basic", "token", "bot", "key")
_USERINFO = re.compile(r"(://)[^/@\s'\"\\]+@")  # user:password@ in a URL of a log line
_ESCAPE = re.compile(r"(\\[rnt])")  # a line break as repr() shows it in a log line


def normalise(name: str) -> str:
    """``client_secret``, ``clientSecret`` and ``Client-Secret`` are one name. Only ASCII is
    folded: a name spelt with a look-alike (the Kelvin sign lowers to ``k``) is another name,
    as it is to the one scan."""
    folded = name.lower() if name.isascii() else name
    return folded.replace("-", "").replace("_", "")


def env_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Value -> ``$NAME`` for each credential-like variable (``*_API_KEY``, ``*_TOKEN``,
    ``*_SECRET``, ``*_PASSWORD``, ``HF_TOKEN``, ...) whose value is long enough to search for."""
    return {
        value: f"${name}"
        for name, value in sorted(environ.items())
        if _ENV_NAME.search(name) and len(value) >= MIN_VALUE_LENGTH
    }


def credential_values(value: str, header: str = "") -> list[str]:
    """The secret strings a value found by name carries, to be replaced wherever else they
    appear: the credential after an auth scheme (and a Basic password), cookie values."""
    header = header.lower()
    if header in ("cookie", "set-cookie"):
        pairs = value.split(";")
        pairs = pairs[:1] if header == "set-cookie" else pairs  # the rest are attributes
        return [p.partition("=")[2].strip() for p in pairs]
    scheme, _, credential = value.strip().partition(" ")
    if scheme.upper().startswith("AWS4-") and credential:  # SigV4: the key id, the signature
        fields = dict(f.strip().partition("=")[::2] for f in credential.split(","))
        return [value, fields.get("Credential", "").partition("/")[0], fields.get("Signature", "")]
    if not credential or scheme.lower() not in _AUTH_SCHEMES:
        return [value]
    credential = credential.strip()
    out = [credential]
    if scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            out.append(base64.b64decode(credential, validate=True).decode().partition(":")[2])
    return out


_JSON_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")


def _utf8(text: str) -> bytes:
    """``text``'s bytes, even where it holds surrogates: a header's non-UTF-8 bytes (decoded
    with ``surrogateescape``) become those bytes again, any other lone surrogate its 3 bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _variants(value: str) -> set[str]:
    """The forms a value is found in: as it is, URL-encoded, base64 (standard and URL-safe,
    without padding) and JSON-escaped."""
    raw = _utf8(value)
    escaped = json.dumps(value)[1:-1]  # non-ASCII as \u00e9; some writers use \u00E9
    out = {
        value,
        quote(raw, safe=""),
        quote_plus(raw),
        escaped,
        _JSON_ESCAPE.sub(lambda m: m.group(0).upper().replace("\\U", "\\u"), escaped),
    }
    out.update(
        enc(raw).decode().rstrip("=") for enc in (base64.b64encode, base64.urlsafe_b64encode)
    )
    return {v for v in out if len(v) >= MIN_VALUE_LENGTH}


def _re2_literal(text: str) -> str:
    """``text`` as an RE2 pattern over Latin-1 bytes (its UTF-8 bytes, each matched as is)."""
    return "".join(chr(b) if chr(b).isalnum() and b < 128 else f"\\x{b:02x}" for b in _utf8(text))


def param_values(pairs: list[tuple[str, str]], secrets: Secrets) -> list[str]:
    """The secret strings that secret query parameters or form fields carry."""
    return [
        c
        for k, v in pairs
        if secrets.is_secret_param(k) and v != REDACTED
        for c in credential_values(v)
    ]


class Secrets:
    """The rules of the three layers, plus the values known to be secret here.

    One instance holds the proxy's settings (``cassette_redact_fields``,
    ``cassette_redact_headers``, the environment); ``with_values`` derives one that also knows a
    flow's own secrets (the key in its headers). Regexes are compiled on first use."""

    def __init__(
        self,
        fields: Iterable[str] = (),
        headers: Iterable[str] = (),
        paths: Iterable[Path] = (),
        values: Mapping[str, str] | Iterable[str] = (),
    ):
        self.headers = SECRET_HEADERS | {h.lower() for h in headers}
        self.raw_headers = frozenset(h.encode() for h in self.headers)  # as they come on the wire
        fields = tuple(fields)
        # JSON keys: the field names, and header names (an SDK's extra_headers in a body)
        self.keys = frozenset(normalise(n) for n in (*SECRET_FIELDS, *fields, *self.headers))
        self.params = frozenset(normalise(n) for n in (*SECRET_FIELDS, *PARAM_ONLY_FIELDS, *fields))
        self.paths: tuple[Path, ...] = tuple(paths)
        labelled = values if isinstance(values, Mapping) else dict.fromkeys(values, "")
        self.values: dict[str, str] = {
            v: label or _FLOW_VALUE
            for v, label in labelled.items()
            if len(v) >= MIN_VALUE_LENGTH and v not in REDACTED
        }
        self._forget_compiled()

    def _forget_compiled(self) -> None:
        self._derived: dict[frozenset[str], Secrets] = {}
        self._prefilter: Any = None  # re2's compiled pattern
        self._values_rx: re.Pattern[str] | None = None
        self._labels: dict[str, str] = {}  # each form of each value -> what the value is
        self._named_rx: re.Pattern[str] | None = None
        # might_hold's answers for texts (URL paths, asked of each request, often twice)
        self._text_held = remembered(self._scan_text)

    @classmethod
    def from_settings(
        cls,
        fields: Iterable[str] = (),
        headers: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> Secrets:
        """From option values: ``fields`` are names (any depth) or dotted paths (from a body's
        root); a path that does not parse raises ``ValueError`` naming it."""
        fields = list(fields)
        paths = [parse_path(f) for f in fields if is_path(f)]
        names = [f for f in fields if not is_path(f)]
        return cls(names, headers, paths, env_values(environ or {}))

    def with_values(self, values: Iterable[str]) -> Secrets:
        """These rules, also knowing ``values`` (a flow's own secrets). Cached, so a run whose
        requests all carry the same key compiles its patterns once."""
        new = frozenset(
            v
            for v in values
            if v not in self.values and len(v) >= MIN_VALUE_LENGTH and v not in REDACTED
        )
        if not new:
            return self
        derived = self._derived.get(new)
        if derived is None:
            if len(self._derived) >= 64:  # the oldest goes: a flow's own key is asked again
                del self._derived[next(iter(self._derived))]
            derived = copy.copy(self)
            derived.values = {**self.values, **dict.fromkeys(sorted(new), _FLOW_VALUE)}
            derived._forget_compiled()
            self._derived[new] = derived
        return derived

    # -- layer 1: names --------------------------------------------------------------------

    def is_secret_header(self, name: str) -> bool:
        return name.lower() in self.headers

    def is_secret_key(self, name: str) -> bool:
        """A JSON key whose (string) value is a secret, at any depth."""
        return normalise(name) in self.keys

    def is_secret_field(self, key: str, value: Any, path: Sequence[str | int] | None) -> bool:
        """A JSON field whose value is a secret: a string under a secret key, at any depth, or
        any value but null at a path of ``cassette_redact_fields`` (``path``: from the body's
        root, the key included; None where there is no such root)."""
        if isinstance(value, str) and self.is_secret_key(key):
            return True
        return path is not None and value is not None and any(matches(p, path) for p in self.paths)

    def is_secret_param(self, name: str) -> bool:
        """A query parameter, form field or multipart field whose value is a secret."""
        return normalise(name) in self.params

    # -- layers 2 and 3: values and shapes, inside any string ------------------------------

    def might_hold(self, raw: bytes | str) -> bool:
        """Whether ``raw`` may hold a secret JSON key, a known value or a shape: one RE2 scan.
        False means that nothing in it is changed by ``replace`` or by dropping fields by name,
        so the caller can skip walking it. An escaped ASCII character (``\\u005f``, ``\\/``) says
        yes: a key or value written with one (``api\\u005fkey``) is only seen once the text is
        parsed. Escaped non-ASCII text (``caf\\u00e9``, as Python's ``json.dumps`` writes it)
        does not: no key or shape holds any, and a known value's escaped forms are searched.
        The answer for a short text (a URL path, asked of each request) is remembered."""
        if self._prefilter is None:
            options = re2.Options()
            options.encoding = re2.Options.Encoding.LATIN1
            options.never_capture = True
            options.max_mem = 32 << 20
            keys = "|".join("[-_]*".join(_re2_literal(c) for c in k) for k in sorted(self.keys))
            parts = [  # a key's closing quote escaped too: JSON inside a string
                f'(?i:"[-_]*(?:{keys})[-_]*\\\\*"\\s*:)',
                r"\\u00[0-7][0-9A-Fa-f]|\\/",
                *_LOOSE_SHAPES,
            ]
            parts += [_re2_literal(v) for value in self.values for v in _variants(value)]
            pattern = "|".join(f"(?:{p})" for p in parts).encode("latin-1")
            self._prefilter = re2.compile(pattern, options)
        if isinstance(raw, str):
            return self._text_held(raw)
        return self._prefilter.search(raw) is not None

    def _scan_text(self, text: str) -> bool:
        return self._prefilter.search(_utf8(text)) is not None

    def _values(self) -> re.Pattern[str] | None:
        """Every form of every known value, longest first, as one pattern (None: none known)."""
        if self._values_rx is None and self.values:
            for value, label in self.values.items():
                for form in _variants(value):
                    self._labels.setdefault(form, label)
            forms = sorted(self._labels, key=lambda f: (-len(f), f))
            self._values_rx = re.compile("|".join(map(re.escape, forms)))
        return self._values_rx

    def replace(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """``text`` with every known value (in any of its forms) and every shape replaced by
        ``REDACTED``; and what was replaced, as (layer, what) pairs."""
        hits: list[tuple[str, str]] = []
        values = self._values()
        if values is not None:

            def value_hit(m: re.Match[str]) -> str:
                hits.append(("value", self._labels[m.group(0)]))
                return REDACTED

            text = values.sub(value_hit, text)

        def shape_hit(m: re.Match[str]) -> str:
            i = int(m.lastgroup[1:])  # type: ignore[index]
            hits.append(("shape", SHAPES[i].what))
            return _kept(m, i) + REDACTED

        text = _SHAPES_RX.sub(shape_hit, text)
        return text, hits

    def spans(self, text: str) -> list[tuple[int, int, str, str]]:
        """Where ``replace`` would replace something in ``text``, as (start, end, layer, what)
        in order (they may overlap): for text spelled across several strings, which are then
        changed piece by piece."""
        found: list[tuple[int, int, str, str]] = []
        values = self._values()
        if values is not None:
            found += [
                (m.start(), m.end(), "value", self._labels[m.group(0)])
                for m in values.finditer(text)
            ]
        for m in _SHAPES_RX.finditer(text):
            i = int(m.lastgroup[1:])  # type: ignore[index]
            found.append((m.start() + len(_kept(m, i)), m.end(), "shape", SHAPES[i].what))
        return sorted(found)

    def replace_in_name(self, name: str) -> tuple[str, list[tuple[str, str]]]:
        """``replace`` for a name made for a file system, where ``_`` glues words together
        (``test_x_sk-...``) and hides a key's word boundary: each part after a ``_`` is also
        looked at as if it began the name."""
        hits: list[tuple[str, str]] = []
        start = 0
        while True:
            new, found = self.replace(name[start:])
            if found:
                name, hits = name[:start] + new, hits + found
            start = name.find("_", start) + 1
            if not start:
                return name, hits

    def redacted(self, text: str) -> str:
        """``text`` with known values and shapes replaced, after one scan says there may be
        some: for the names the proxy makes (test ids, directory and file names)."""
        return self.replace(text)[0] if self.might_hold(text) else text

    def replace_in_log(self, text: str) -> str:
        """A line to print with known values and shapes replaced, the value after a secret name
        (``key=...``, ``Authorization: Bearer ...``) and a URL's user info, as in a raw request
        that mitmproxy echoes back."""
        if self.might_hold(text):  # a repr'd request's lines, split at their \r\n escapes
            text = "".join(
                piece if _ESCAPE.fullmatch(piece) else self.replace(piece)[0]
                for piece in _ESCAPE.split(text)
            )
        if self._named_rx is None:
            every = self.params | self.keys | {normalise(h) for h in self.headers}
            names = "|".join("[-_]?".join(map(re.escape, n)) for n in sorted(every))
            # ``name=value``, ``Name: Bearer value`` and JSON's ``"name": "value"`` (its quotes
            # escaped too, as in a repr), the name starting a line (after an escaped \r\n) or
            # a word; a value already ``<...>`` stays.
            self._named_rx = re.compile(
                rf"(?:(?<=\\[rn])|(?<![A-Za-z0-9]))((?:{names})(?:\\?\")?\s*[=:]\s*(?:\\?\")?"
                r"(?:(?:bearer|basic|token)\s+)?+)(?!<)[^\s&'\"\\,;]+",
                re.IGNORECASE,
            )
        text = self._named_rx.sub(lambda m: m.group(1) + REDACTED, text)
        return _USERINFO.sub(rf"\1{REDACTED}@", text)


BUILT_IN = Secrets()
