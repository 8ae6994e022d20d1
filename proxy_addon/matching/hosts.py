"""Which host a recording was made for, and how close that is to the host a request went to.

llama-stack's recordings match on any host (its recorder ran against whatever base URL the test
used), but each keeps its original URL, and that host is evidence: a server asking
``api.openai.com`` for its model list must not get a local llama.cpp's. Among recordings of one
request, the store prefers those made for the request's own host, then those of the same
provider family, then any. Pure functions: host strings in, ranks out.
"""

from __future__ import annotations

from typing import Any

# Names that all mean "this machine" to a client: a server recorded at localhost:11434 is the
# one a client reaches at 127.0.0.1:11434.
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]", "host.docker.internal"})

# Known provider hosts by domain suffix (checked in order, longest first where they overlap).
_HOST_FAMILIES: tuple[tuple[str, str], ...] = (
    (".openai.azure.com", "azure-openai"),
    ("api.openai.com", "openai"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gemini"),
    ("aiplatform.googleapis.com", "vertex"),
    (".ml.cloud.ibm.com", "watsonx"),
    (".api.aws", "bedrock"),
    (".amazonaws.com", "bedrock"),
    ("api.groq.com", "groq"),
    ("api.mistral.ai", "mistral"),
    ("api.cohere.com", "cohere"),
    ("api.together.xyz", "together"),
    ("api.fireworks.ai", "fireworks"),
    ("api.tavily.com", "tavily"),
)

# Local servers by their usual port (Ollama, vLLM, llama.cpp, LiteLLM, LM Studio).
_LOCAL_PORTS = {
    "11434": "ollama",
    "8000": "vllm",
    "8080": "llama.cpp",
    "4000": "litellm",
    "1234": "lmstudio",
}


def is_loopback(name: str) -> bool:
    return name.lower() in _LOOPBACK


def split_host(host: str) -> tuple[str, str]:
    """``name:port`` as (name, port); the port is empty when it is the scheme's default."""
    if host.startswith("["):  # [::1]:8080
        name, _, rest = host.partition("]")
        return name + "]", rest.removeprefix(":")
    name, sep, port = host.rpartition(":")
    return (name, port) if sep and port.isdigit() else (host, "")


def same_host(a: str, b: str) -> bool:
    """Whether two normalised hosts (``name[:port]``) reach the same server; all loopback
    names are one machine."""
    (name_a, port_a), (name_b, port_b) = split_host(a), split_host(b)
    if name_a in _LOOPBACK and name_b in _LOOPBACK:
        return port_a == port_b
    return a == b


def family(host: str, path: str) -> str:
    """The provider behind a host: a known domain, a local server by its usual port, or
    judged by the path (``/api/`` Ollama, ``/ml/v1/`` watsonx, ``/v1/messages`` Anthropic,
    ``:generateContent`` Gemini, other ``/v1/`` OpenAI-compatible) when the host says
    nothing."""
    name, port = split_host(host)
    for suffix, provider in _HOST_FAMILIES:
        if name == suffix.lstrip(".") or name.endswith(suffix):
            return provider
    if name in _LOOPBACK and port in _LOCAL_PORTS:
        return _LOCAL_PORTS[port]
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/ml/v1/"):
        return "watsonx"
    if path.startswith("/v1/messages"):
        return "anthropic"
    if ":generateContent" in path or ":streamGenerateContent" in path:
        return "gemini"
    return "openai-compatible"


def closeness(asked: str, recorded: str, path: str) -> int:
    """2: the same host; 1: the same provider family; 0: another host."""
    if same_host(asked, recorded):
        return 2
    return 1 if family(asked, path) == family(recorded, path) else 0


# -- model lists -------------------------------------------------------------------------------

MODEL_LIST_PATHS = ("/models", "/api/tags")


def is_model_list(method: str, path: str) -> bool:
    return method == "GET" and path.endswith(MODEL_LIST_PATHS)


def _items(body: Any) -> tuple[str, list[Any]] | None:
    """(field, items) of a model list: OpenAI's ``data`` or Ollama's ``models``."""
    if isinstance(body, dict):
        for name in ("data", "models"):
            if isinstance(body.get(name), list):
                return name, body[name]
    return None


def _model_id(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("id") or item.get("model") or item.get("name")
    return item


def union_of_model_lists(bodies: list[Any]) -> Any:
    """One model list holding every model of ``bodies`` once, in the order first recorded.

    Each recording of a host's model list saw the models it had at that moment; a client asking
    that host now should find any of them. The first body gives the shape (its other fields)."""
    first = _items(bodies[0])
    if first is None:
        return bodies[0]
    field, _ = first
    seen: set[Any] = set()
    merged: list[Any] = []
    for body in bodies:
        found = _items(body)
        for item in found[1] if found is not None else []:
            ident = _model_id(item)
            key = ident if isinstance(ident, (str, int)) else repr(item)
            if key not in seen:
                seen.add(key)
                merged.append(item)
    return {**bodies[0], field: merged}
