"""What replay saved: the tokens a recorded answer's ``usage`` says it used, in any provider's
shape, and what they would have cost at prices the user gives (there is no built-in price list:
prices change, a list in the package would go stale)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# Each provider's usage object: the names of its input and output token counts. The first
# shape whose input or output names appear is used; a new shape is one line.
USAGE_SHAPES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("OpenAI chat", ("prompt_tokens",), ("completion_tokens",)),
    # Anthropic counts cached input apart from input_tokens; OpenAI's Responses API does not
    # have those names (its cached tokens are inside input_tokens)
    (
        "OpenAI Responses, Anthropic",
        ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"),
        ("output_tokens",),
    ),
    ("Gemini", ("promptTokenCount",), ("candidatesTokenCount", "thoughtsTokenCount")),
    ("Ollama", ("prompt_eval_count",), ("eval_count",)),
    # Bedrock's Converse (and Amazon Nova through InvokeModel); Anthropic models on Bedrock
    # answer in Anthropic's shape above
    (
        "Bedrock Converse, Nova",
        ("inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"),
        ("outputTokens",),
    ),
    ("Meta Llama on Bedrock", ("prompt_token_count",), ("generation_token_count",)),
)


def tokens_of(usage: Any) -> tuple[int, int] | None:
    """(input, output) tokens of a ``usage`` object, or None when it has no known shape."""
    if not isinstance(usage, Mapping):
        return None
    for _, inputs, outputs in USAGE_SHAPES:
        if any(name in usage for name in inputs + outputs):
            return _sum(usage, inputs), _sum(usage, outputs)
    return None


def _sum(usage: Mapping[str, Any], names: tuple[str, ...]) -> int:
    return sum(v for n in names if isinstance(v := usage.get(n), int) and not isinstance(v, bool))


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float


def load_prices(path: Path) -> dict[str, Price]:
    """A price file: JSON, model name to dollars per million tokens, e.g.
    ``{"gpt-4o": {"input": 2.5, "output": 10}}``. ``ValueError`` names what is wrong."""
    from proxy_addon.formats import read_bytes  # a FIFO is refused, not waited on
    from proxy_addon.model import CassetteError  # (both here: ``cassette run`` imports this)

    try:
        data = orjson.loads(read_bytes(path))
    except CassetteError as e:
        raise ValueError(f"cannot read the price file {path}: {e.reason}") from None
    except orjson.JSONDecodeError as e:
        raise ValueError(f"the price file {path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the price file {path} must map model names to prices")
    prices = {}
    for model, price in data.items():
        if not (
            isinstance(price, dict)
            and set(price) == {"input", "output"}
            and all(isinstance(v, int | float) and v >= 0 for v in price.values())
        ):
            raise ValueError(
                f"the price file {path}: {model!r} must be "
                '{"input": USD per million tokens, "output": USD per million tokens}'
            )
        prices[model] = Price(float(price["input"]), float(price["output"]))
    return prices


def cost(prices: Mapping[str, Price], by_model: Mapping[str, tuple[int, int]]) -> float:
    """What the tokens of the models that have a price would have cost, in dollars."""
    return sum(
        (inp * prices[m].input + out * prices[m].output) / 1_000_000
        for m, (inp, out) in by_model.items()
        if m in prices
    )
