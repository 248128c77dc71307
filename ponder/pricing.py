"""The one pricing function: tokens at a lane's prices.

Used by the gateway, the CLI, the lab, the cascade and summaries alike, so
a dollar figure means the same thing everywhere.  Thinking is billed as
output (it is generated); tool results are billed as input (the model reads
them); cached prompt tokens at the cached price where the lane has one.
"""

from __future__ import annotations

from ponder.config import Prices
from ponder.types import Usage


def price(usage: Usage, prices: Prices) -> float:
    """US dollars for ``usage`` at ``prices``."""
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    cached_price = prices.input_per_1m if prices.cached_input_per_1m is None else prices.cached_input_per_1m
    fresh_input = usage.prompt_tokens - cached + usage.tool_tokens
    return (fresh_input * prices.input_per_1m + cached * cached_price
            + usage.completion_tokens * prices.output_per_1m) / 1e6
