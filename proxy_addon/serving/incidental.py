"""Incidental requests: what frameworks send besides the calls under test (a price map fetched
at import, traces posted at exit, telemetry). A replay answers each of them itself, as set out
below, instead of failing the run with a miss; the other modes forward them; none is recorded.

Each built-in answer is the one that lets its framework go on as it would online without the
call mattering (the sources are the installed wheels, ``package==version path``):

- a download the framework has a bundled copy of gets a 404, which makes it fall back to that
  copy at once (a 429 or 5xx is retried with back-off first);
- an upload (traces, telemetry) gets the success its exporter checks for, so nothing is
  retried and nothing is logged;
- a check whose answer is read gets a body that reads as the offline default;
- a token request of a cloud SDK (OAuth, the GCE metadata server, Entra ID, STS) gets a
  placeholder credential of the right shape and lifetime, made per request by ``tokens.py``;
  a refresh forwards it (a re-recording needs a real token).

A download whose bytes the program needs (tiktoken's encodings, checked against a fixed
hash; a Hugging Face tokenizer) is no incidental request: it is recorded and replayed like a
model call, or the cache it fills is filled beforehand (see the README, Frameworks).

The user's patterns (``cassette_incidental``) are ``METHOD HOST/PATH [STATUS]``: a method or
``*``, a glob over the host (with its port when not the default one) and the path, and the
status to answer with (default 204; ``{}`` is the body of any status but 204).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import translate

from proxy_addon.remembered import remembered
from proxy_addon.serving import tokens

EMPTY_JSON = b"{}"


@dataclass(frozen=True, slots=True)
class Incidental:
    """A kind of request not under test, and what a replay answers it."""

    method: str  # an HTTP method, or "*" for any
    target: str  # a glob over ``host[:port]/path`` (``*`` spans "/" in the path only)
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    what: str = ""  # who sends it (the user's pattern: the option), for the log line
    # an answer made per request (a token's lifetime counts from now), instead of the above
    made: Callable[[tokens.TokenRequest], tokens.Answer] | None = None
    credentials: bool = False  # it fetches credentials: forwarded in refresh too

    @property
    def pattern(self) -> str:
        return f"{self.method} {self.target}"


def _upload(method: str, target: str, what: str, body: bytes = EMPTY_JSON) -> Incidental:
    return Incidental(method, target, 200, body, what=what)


def _has_bundled_copy(target: str, what: str) -> Incidental:
    return Incidental("GET", target, 404, EMPTY_JSON, what=what)


# The built-in list (``cassette_incidental_builtin``, on by default), from the research of
# 2026-12-03 (README, Frameworks): each entry's source, and why its answer.
BUILT_IN: tuple[Incidental, ...] = (
    # litellm==1.110.2 litellm/litellm_core_utils/get_model_cost_map.py
    # (_classify_fetch_response: a 4xx but 429 is not retried, the bundled map is used at once,
    # with one WARNING line); litellm/anthropic_beta_headers_manager.py likewise
    _has_bundled_copy("raw.githubusercontent.com/BerriAI/litellm/*", "LiteLLM's model price map"),
    # agents==0.24.0 agents/tracing/processors.py:46 (the endpoint, fixed whatever
    # OPENAI_BASE_URL says), :209 (below 300: exported; a 4xx is logged as an error, a 5xx
    # retried)
    Incidental(
        "POST",
        "api.openai.com/v1/traces/ingest",
        204,
        content_type="",
        what="OpenAI Agents SDK traces",
    ),
    # langsmith==0.15.1 langsmith/client.py:1877 (/info: read as the server's settings, with
    # compression on as LangSmith's own servers have it; without it the client warns "Run
    # compression is not enabled", _internal/_background_thread.py:572), :3232, :3519 and
    # :3605 (runs: any 2xx); on only with LANGSMITH_TRACING=true
    _upload(
        "GET",
        "*api.smith.langchain.com/info",
        "LangSmith tracing",
        b'{"instance_flags": {"zstd_compression_enabled": true}}',
    ),
    _upload("POST", "*api.smith.langchain.com/runs*", "LangSmith tracing"),
    _upload("PATCH", "*api.smith.langchain.com/runs/*", "LangSmith tracing"),
    # logfire==5.4.0 logfire/_internal/config.py:1931 (the token check: a project without a
    # URL prints nothing), OTLP exporters for /v1/traces, /v1/metrics, /v1/logs (any 2xx or
    # 3xx: opentelemetry exporter otlp common/http.py:203); only when a token is set
    _upload(
        "GET",
        "logfire-*.pydantic.dev/v1/info",
        "Logfire",
        b'{"project_name": "", "project_url": ""}',
    ),
    _upload("POST", "logfire-*.pydantic.dev/v1/*", "Logfire", b""),
    # crewai==1.15.30 crewai/telemetry/constants.py:9 (OTLP, as above)
    _upload("POST", "telemetry.crewai.com:4319/v1/*", "CrewAI telemetry", b""),
    # haystack-ai==3.4.1 haystack/telemetry/_telemetry.py:57; posthog==7.91.1 request.py:278
    # (exactly 200 is success)
    _upload("POST", "*.i.posthog.com/batch/", "PostHog telemetry (Haystack)"),
    # huggingface_hub==2.4.0 utils/_detect_agent.py:190-205 (a failed fetch is logged at debug
    # level, and the download that asked for it goes on)
    _has_bundled_copy("huggingface.co/api/agent-harnesses", "Hugging Face Hub agent registry"),
    # genai_prices==0.2.3 update_prices.py:24, after pydantic_ai.prices.update_in_background()
    # (the bundled prices stay; one ERROR line from its background thread)
    _has_bundled_copy("raw.githubusercontent.com/pydantic/genai-prices/*", "genai-prices update"),
    # the cloud SDKs' token requests (tokens.py: its sources, and the answers' shapes)
    *(
        Incidental(e.method, e.target, 200, what=e.what, made=e.answer, credentials=True)
        for e in tokens.ENDPOINTS
    ),
)

_STATUS = re.compile(r"[1-5]\d\d")


def parse(item: str) -> Incidental:
    """A user's pattern, ``METHOD HOST/PATH [STATUS]`` (``ValueError`` saying what is wrong)."""
    parts = item.split()
    if len(parts) not in (2, 3) or "/" not in parts[1] or "://" in parts[1]:
        raise ValueError(
            f"{item!r} is not METHOD HOST/PATH [STATUS], such as "
            "'POST telemetry.example.com/v1/* 204'"
        )
    method, target = parts[0].upper(), parts[1]
    if method != "*" and not method.isalpha():
        raise ValueError(f"{item!r}: {parts[0]!r} is not an HTTP method or *")
    status = 204
    if len(parts) == 3:
        if not _STATUS.fullmatch(parts[2]):
            raise ValueError(f"{item!r}: {parts[2]!r} is not an HTTP status such as 204")
        status = int(parts[2])
    host, _, path = target.partition("/")
    return Incidental(
        method,
        f"{host.lower()}/{path}",
        status,
        b"" if status == 204 else EMPTY_JSON,
        "application/json" if status != 204 else "",
        f"cassette_incidental={' '.join(parts)}",
    )


def _target(glob: str) -> str:
    """A ``host/path`` glob as a regular expression: in the host a ``*`` stays within it, in the
    path it spans "/" (as fnmatch's)."""
    host, _, path = glob.partition("/")
    host_rx = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in host)
    return f"{host_rx}/{translate(path)}"  # fnmatch's group is anchored at the end


class IncidentalRequests:
    """The patterns in force, compiled into one regular expression over ``METHOD host/path``:
    one match per request, whatever their number (the common case, a model call, matches
    none of them)."""

    def __init__(self, patterns: Sequence[Incidental] = ()) -> None:
        self.patterns = tuple(patterns)
        alternatives = [
            f"(?P<p{i}>{'[^ ]+' if p.method == '*' else re.escape(p.method)} {_target(p.target)})"
            for i, p in enumerate(self.patterns)
        ]
        self._rx = re.compile("|".join(alternatives)) if alternatives else None
        # the answers for the requests asked about, by their line (a run asks the same few)
        self._line_matches = remembered(self._line_match)

    def match(self, method: str, host: str, path: str) -> Incidental | None:
        """The pattern a request (its comparable host, see ``canonical.comparable_host``, and
        its path without the query) matches, if any."""
        if self._rx is None:
            return None
        return self._line_matches(f"{method} {host}{path}")

    def _line_match(self, line: str) -> Incidental | None:
        found = self._rx.match(line) if self._rx is not None else None
        if found is None or found.lastgroup is None:
            return None
        return self.patterns[int(found.lastgroup[1:])]


def in_force(user: Sequence[str], builtin: bool) -> IncidentalRequests:
    """The user's patterns first (so their answer wins), then the built-in list when on."""
    return IncidentalRequests([parse(item) for item in user] + (list(BUILT_IN) if builtin else []))


BUILT_IN_ONLY = IncidentalRequests(BUILT_IN)  # the default
