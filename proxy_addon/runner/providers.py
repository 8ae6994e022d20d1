"""Base-URL listeners: one reverse-proxy port per provider, for clients that ignore HTTPS_PROXY.

Node's built-in fetch and the official Node SDKs (``openai``, ``@anthropic-ai/sdk``) never read
``HTTPS_PROXY``; every official SDK reads a base-URL variable instead. For each provider below
the proxy opens a reverse-proxy listener on 127.0.0.1 that forwards to the provider (or to
whatever the variable already pointed at: a local vLLM, a gateway, a test stand-in), and the
variable is set to that listener. The client then speaks plain HTTP to 127.0.0.1, needs no CA,
and its requests are recorded under the real upstream's host, as through HTTPS_PROXY.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Provider:
    name: str
    variable: str  # the environment variable the SDKs read
    # its value when unset: the provider's public base URL, as the SDKs expect it ("": none,
    # the listener is opened only when the user set the variable)
    default: str
    read_by: str  # which SDKs read the variable (checked; see README), shown by `cassette proxy`
    host_only: bool = False  # the value is a host[:port] (OLLAMA_HOST), not a base URL
    # the key variables its SDKs (and the frameworks over them) refuse to start without; any
    # one of them set is enough, the first is the one a replay sets (``placeholder_keys``)
    keys: tuple[str, ...] = ()


# The one table of providers. Not here, because their SDKs read no base-URL variable: Mistral
# (``server_url=`` / ``serverURL``), and in Node ollama (``host``) and cohere-ai (``baseUrl``).
PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "openai",
        "OPENAI_BASE_URL",
        "https://api.openai.com/v1",
        "openai (Python, Node)",
        keys=("OPENAI_API_KEY",),
    ),
    Provider(
        "anthropic",
        "ANTHROPIC_BASE_URL",
        "https://api.anthropic.com",
        "anthropic (Python), @anthropic-ai/sdk (Node)",
        keys=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
    ),
    Provider("ollama", "OLLAMA_HOST", "http://127.0.0.1:11434", "ollama (Python)", host_only=True),
    Provider(
        "gemini",
        "GOOGLE_GEMINI_BASE_URL",
        "https://generativelanguage.googleapis.com",
        "google-genai (Python), @google/genai (Node)",
        # google-genai warns on every client when both are set: one is set, GOOGLE_API_KEY,
        # which google-genai, LiteLLM, pydantic-ai and LangChain's Google models all read
        keys=("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    ),
    Provider(
        "groq", "GROQ_BASE_URL", "https://api.groq.com", "groq (Python)", keys=("GROQ_API_KEY",)
    ),
    Provider(
        "cohere",
        "CO_API_URL",
        "https://api.cohere.com",
        "cohere (Python)",
        keys=("CO_API_KEY", "COHERE_API_KEY"),
    ),
    # The clouds' base URLs are the user's own (a resource, a region): a listener only where
    # the variable is set. Not Bedrock: SigV4 signs the Host header, which a listener changes
    # (boto3's AWS_ENDPOINT_URL_BEDROCK_RUNTIME, ANTHROPIC_BEDROCK_BASE_URL); nor google-genai's
    # GOOGLE_VERTEX_BASE_URL, which turns a URL outside googleapis.com into a gateway without
    # project, location or token. Those go through HTTPS_PROXY (README: Cloud providers).
    Provider(
        "azure-openai",
        "AZURE_OPENAI_ENDPOINT",
        "",  # https://<resource>.openai.azure.com
        "openai (Python): AzureOpenAI",
        keys=("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"),  # either one, AzureOpenAI says
    ),
    Provider(
        "vertex-anthropic",
        "ANTHROPIC_VERTEX_BASE_URL",
        "",  # https://<region>-aiplatform.googleapis.com/v1
        "anthropic (Python): AnthropicVertex",
    ),
)
# The key variables of providers whose SDKs read no base-URL variable (so no listener above),
# which pydantic-ai still requires: ``Agent("mistral:...")`` refuses to start without it.
KEYS_WITHOUT_LISTENER: tuple[tuple[str, ...], ...] = (("MISTRAL_API_KEY",),)
# AWS (boto3, AnthropicBedrock): SigV4 signs with a key pair, and nothing is sent without one.
# A replay sets both halves unless the user set a credential source of any kind (botocore's
# chain: keys, a profile, a role, a container's, a Bedrock API key). Any pair matches: the
# signature, the date and the key id are left out of the key (README: Cloud providers).
AWS_KEY_PAIR = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
AWS_CREDENTIAL_SOURCES = (
    *AWS_KEY_PAIR,
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_BEARER_TOKEN_BEDROCK",
)

# What a replay sets for each unset key variable, so that SDKs that refuse to start without a
# key (the openai SDK, pydantic-ai, CrewAI, ...) start and send their requests, which a replay
# answers whatever key they carry (secret headers are not matched). Shaped like a key
# (``sk-...``) so that redaction replaces it like any key, should it ever reach a recording.
PLACEHOLDER_KEY = "sk-cassette-replay-placeholder"


@dataclass(frozen=True)
class Listener:
    """A provider's listener: where it forwards, and what its variable is set to."""

    provider: Provider
    port: int
    upstream: str  # scheme://host[:port], the target of ``--mode reverse:``
    path: str  # the base URL's path (``/v1``), kept in the variable's new value
    host: str = LOOPBACK  # where clients reach the listener

    @property
    def mode(self) -> str:
        """mitmproxy's ``--mode`` spec for this listener."""
        return f"reverse:{self.upstream}@{self.port}"

    @property
    def value(self) -> str:
        """The provider variable's value that points a client at this listener."""
        if self.provider.host_only:
            return f"http://{self.host}:{self.port}"
        return f"http://{self.host}:{self.port}{self.path}"


def _base_url(provider: Provider, value: str) -> str:
    """The variable's value as a URL: OLLAMA_HOST may be ``host``, ``host:port`` or a URL."""
    if not provider.host_only:
        return value
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.hostname or LOOPBACK}:{parts.port or 11434}"


def choose(text: str) -> dict[str, int | None]:
    """Which listeners to open, as ``--listeners`` gives them: ``all``, ``none``, or provider
    names separated by commas, each with ``:PORT`` or not (then a free port): provider name ->
    port or None. ``ValueError`` names what does not parse."""
    text = text.strip()
    if text == "all":
        return dict.fromkeys((p.name for p in PROVIDERS), None)
    if text == "none":
        return {}
    names = [p.name for p in PROVIDERS]
    chosen: dict[str, int | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, port = item.partition(":")
        if name not in names:
            raise ValueError(
                f"{name!r} is not a provider: all, none, or some of {', '.join(names)} "
                "(each as NAME or NAME:PORT, separated by commas)"
            )
        if sep and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{item!r}: the port must be a number from 1 to 65535")
        chosen[name] = int(port) if sep else None
    if not chosen:
        raise ValueError("no listener named: give all, none, or provider names")
    return chosen


def plan(env: Mapping[str, str], ports: Mapping[str, int], host: str = LOOPBACK) -> list[Listener]:
    """A listener for each provider named in ``ports`` (in table order), on its port. Each
    forwards to the variable's value in ``env`` when the user set one, otherwise to the
    provider's public URL; a provider with none (a cloud's) gets no listener unless its
    variable is set."""
    listeners = []
    for provider in PROVIDERS:
        if provider.name not in ports:
            continue
        value = env.get(provider.variable) or provider.default
        if not value:
            continue
        parts = urlsplit(_base_url(provider, value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{provider.variable}={env.get(provider.variable)!r} is not a base "
                "URL such as https://api.example.com/v1"
            )
        listeners.append(
            Listener(
                provider,
                ports[provider.name],
                f"{parts.scheme}://{parts.netloc}",
                parts.path.rstrip("/"),
                host,
            )
        )
    return listeners


def placeholder_keys(env: Mapping[str, str]) -> dict[str, str]:
    """The placeholder for each provider whose key variables are all unset (or empty) in
    ``env``: its first variable, set to ``PLACEHOLDER_KEY`` (AWS: both halves of a key pair).
    Only for a replay: a command that records needs its real keys, and a placeholder would be
    sent upstream."""
    groups = [p.keys for p in PROVIDERS if p.keys] + list(KEYS_WITHOUT_LISTENER)
    keys = {names[0]: PLACEHOLDER_KEY for names in groups if not any(env.get(n) for n in names)}
    if not any(env.get(n) for n in AWS_CREDENTIAL_SOURCES):
        keys.update(dict.fromkeys(AWS_KEY_PAIR, PLACEHOLDER_KEY))
    return keys


def placeholder_note(names: Iterable[str]) -> str:
    """What a replay tells the user about the placeholders it set."""
    return (
        "cassette: replay: no key was set for "
        + ", ".join(names)
        + f"; the command got the placeholder {PLACEHOLDER_KEY!r} (replayed answers need no key)"
    )
