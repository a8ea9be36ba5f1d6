"""The per-model price table (LLMOPS_MODEL_PRICES): USD per million tokens."""
import pytest
from pydantic import ValidationError

from llmops.common.settings import Settings
from llmops.common.pricing import PriceTable


def test_cost_is_prompt_and_completion_tokens_at_their_prices():
    table = PriceTable.parse("gpt-4o-mini=0.15/0.60, smollm2-135m-instruct=0.5/1.5")
    assert table.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    assert table.cost("gpt-4o-mini", 2000, 500) == pytest.approx((2000 * 0.15 + 500 * 0.60) / 1e6)
    assert table.cost("smollm2-135m-instruct", 10, 20) == pytest.approx((10 * 0.5 + 20 * 1.5) / 1e6)


def test_unpriced_is_not_free():
    table = PriceTable.parse("local=0/0")
    assert table.cost("local", 100, 100) == 0.0
    assert table.cost("other", 100, 100) is None
    assert PriceTable.parse("").cost("local", 1, 1) is None


def test_one_number_prices_both_kinds_and_model_names_may_hold_slashes():
    table = PriceTable.parse("meta-llama/Llama-3.1-8B=0.2")
    assert table.cost("meta-llama/Llama-3.1-8B", 1_000_000, 1_000_000) == pytest.approx(0.4)


@pytest.mark.parametrize("spec,message", [
    ("gpt", "expected model=prompt/completion"),
    ("=1/2", "expected model=prompt/completion"),
    ("m=cheap/2", "must be numbers"),
    ("m=1/2/3", "two non-negative numbers"),
    ("m=-1/2", "two non-negative numbers"),
    ("m=nan/1", "two non-negative numbers"),
    ("m=1/2,m=3/4", "priced twice"),
])
def test_a_bad_table_is_refused_naming_the_entry(spec, message):
    with pytest.raises(ValueError, match=message):
        PriceTable.parse(spec)
    with pytest.raises(ValidationError, match=message):   # at start-up, by the settings
        Settings(model_prices=spec)
