"""What a request costs: a per-model price table, in USD per million tokens (the unit every
provider's price list uses), read from ``LLMOPS_MODEL_PRICES``.

``"gpt-4o-mini=0.15/0.60,llama-3-8b=0.05/0.05"`` prices prompt and completion tokens separately.
A model without a price has no cost (``None``), which is not the same as a free model (``=0/0``):
dashboards and traces leave unpriced requests out instead of counting them as free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPrice:
    prompt_per_m: float       # USD per 1M prompt tokens
    completion_per_m: float   # USD per 1M completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_m + completion_tokens * self.completion_per_m) / 1e6


class PriceTable:
    def __init__(self, prices: dict[str, ModelPrice] | None = None) -> None:
        self.prices = dict(prices or {})

    @classmethod
    def parse(cls, spec: str) -> "PriceTable":
        """``model=prompt/completion,...``; raises ValueError naming the bad entry."""
        prices: dict[str, ModelPrice] = {}
        for entry in (e.strip() for e in spec.split(",")):
            if not entry:
                continue
            model, sep, price = entry.rpartition("=")
            model = model.strip()
            if not sep or not model:
                raise ValueError(f"price entry {entry!r}: expected model=prompt/completion (USD per 1M tokens)")
            try:
                parts = [float(x) for x in price.split("/")]
            except ValueError:
                raise ValueError(f"price entry {entry!r}: prices must be numbers") from None
            if len(parts) == 1:
                parts *= 2
            if len(parts) != 2 or any(not math.isfinite(x) or x < 0 for x in parts):
                raise ValueError(f"price entry {entry!r}: expected two non-negative numbers, prompt/completion")
            if model in prices:
                raise ValueError(f"model {model!r} is priced twice")
            prices[model] = ModelPrice(*parts)
        return cls(prices)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.prices.get(model)
        return None if price is None else price.cost(prompt_tokens, completion_tokens)

    def __contains__(self, model: str) -> bool:
        return model in self.prices
