"""Hosted API prices vs self-hosting, for a monthly volume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ponder.errors import InvalidRequest

DEFAULT_PRICES = Path(__file__).parent / "data" / "api_prices.yaml"


@dataclass(frozen=True)
class ApiPrice:
    name: str
    input: float
    output: float
    typical_thinking: int = 0


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    source: str
    models: list[ApiPrice]
    fast_lane: ApiPrice | None


def load_prices(path: str | Path | None = None) -> PriceTable:
    p = Path(path) if path else DEFAULT_PRICES
    if not p.is_file():
        raise InvalidRequest(f"price table not found: {p}", param="--prices")
    try:
        data = yaml.safe_load(p.read_text()) or {}
        models = [ApiPrice(**m) for m in data["models"]]
        fast = ApiPrice(**data["fast_lane"]) if data.get("fast_lane") else None
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"{p}: not a valid price table ({exc})", param="--prices") from None
    return PriceTable(str(data.get("as_of", "unknown")), str(data.get("source", "")), models, fast)


def monthly_cost(price: ApiPrice, requests: float, input_tokens: int, thinking_tokens: float, answer_tokens: int) -> float:
    per_req = (input_tokens * price.input + (thinking_tokens + answer_tokens) * price.output) / 1e6
    return per_req * requests


def compare(table: PriceTable, *, requests_per_month: float, input_tokens: int, thinking_tokens: int | None,
            answer_tokens: int, fast_share: float) -> list[dict]:
    """Rows: each hosted model's monthly bill, without and with routing."""
    rows = []
    for m in table.models:
        think = m.typical_thinking if thinking_tokens is None else thinking_tokens
        base = monthly_cost(m, requests_per_month, input_tokens, think, answer_tokens)
        routed = monthly_cost(m, requests_per_month * (1 - fast_share), input_tokens, think, answer_tokens)
        if table.fast_lane is not None:
            routed += monthly_cost(table.fast_lane, requests_per_month * fast_share, input_tokens, 0, answer_tokens)
        rows.append({"name": m.name, "thinking_tokens": think, "usd_per_month": base,
                     "usd_per_month_routed": routed, "usd_per_request": base / requests_per_month})
    return rows
