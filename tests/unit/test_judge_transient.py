"""The online path holds a batch on a judge failure that may pass; a bug becomes an error score."""
import asyncio

import pytest

from llmops.common.errors import Unavailable
from llmops.judging.evaluator import Sample
from llmops.judging.online import run_evaluator


class Failing:
    name, metric, version, tier, description = "test.failing", "failing", "1", "cheap", ""
    needs_reference = needs_contexts = False
    scale = "0-1"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def settings(self) -> dict[str, str]:
        return {}

    async def evaluate(self, samples):
        raise self.exc


SAMPLES = [Sample(question="q", answer="a", trace_id="t1")]


@pytest.mark.parametrize("exc", [Unavailable("judge server away"), ConnectionRefusedError("refused"),
                                 TimeoutError("judge timed out")])
def test_online_path_raises_a_transient_failure_so_the_batch_is_held(exc):
    with pytest.raises(type(exc)):
        asyncio.run(run_evaluator(Failing(exc), SAMPLES, hold_transient=True))


def test_on_demand_path_and_deterministic_failures_become_error_judgements():
    for ev, hold in ((Failing(ValueError("bug")), True), (Failing(Unavailable("away")), False)):
        out = asyncio.run(run_evaluator(ev, SAMPLES, hold_transient=hold))
        assert len(out) == 1 and not out[0].ok and out[0].error
