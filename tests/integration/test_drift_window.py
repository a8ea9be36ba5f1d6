"""The drift window report on real Evidently: a stationary window shows no drift, a shifted one
shows which features drifted, for each embedding-drift method; the report is saved."""
import numpy as np
import pandas as pd
import pytest

from llmops.drift.features import CATEGORICAL, NUMERIC, completion_features
from llmops.drift.window_report import EMBEDDING_METHODS, window_drift
from llmops.v1 import common_pb2, events_pb2


def frame(rng, n, shift=0.0):
    return pd.DataFrame({
        "prompt_chars": rng.normal(120 + 80 * shift, 15, n), "answer_chars": rng.normal(300, 40, n),
        "prompt_tokens": rng.normal(60, 8, n), "completion_tokens": rng.normal(48, 6, n),
        "latency_ms": rng.normal(1200, 100, n), "retrieval_top_score": rng.normal(0.6 - 0.3 * shift, 0.05, n),
        "finish_reason": rng.choice(["length", "eos_token"], n, p=[0.3, 0.7]),
    })


TOPICS = np.random.default_rng(99).normal(size=(2, 32))
TOPICS /= np.linalg.norm(TOPICS, axis=1, keepdims=True)


def embeddings(rng, n, shift=0.0):
    """Unit vectors, like sentence embeddings: a dense topic direction plus noise; ``shift`` moves
    the traffic from the first topic to the second."""
    topic = (1.0 - shift) * TOPICS[0] + shift * TOPICS[1]
    v = topic * 4.0 + rng.normal(0.0, 1.0, (n, TOPICS.shape[1]))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("method", EMBEDDING_METHODS)
def test_stationary_window_is_quiet_and_a_shifted_one_is_not(method, tmp_path):
    rng = np.random.default_rng(7)
    ref, ref_e = frame(rng, 300), embeddings(rng, 300)
    same = window_drift(ref, frame(rng, 200), numeric=NUMERIC, categorical=CATEGORICAL, reference_embeddings=ref_e,
                        current_embeddings=embeddings(rng, 200), method=method)
    assert not same.dataset_drift and same.drift_share < 0.5
    assert same.embedding is not None and not same.embedding.drifted, same.embedding
    shifted = window_drift(ref, frame(rng, 200, shift=1.0), numeric=NUMERIC, categorical=CATEGORICAL,
                           reference_embeddings=ref_e, current_embeddings=embeddings(rng, 200, shift=1.0),
                           method=method, save_to=tmp_path / "window-1")
    assert {"prompt_chars", "retrieval_top_score"} <= set(shifted.drifted_features)
    assert "latency_ms" not in shifted.drifted_features
    assert shifted.embedding.drifted and shifted.embedding.value > shifted.embedding.threshold
    pc = next(f for f in shifted.features if f.feature == "prompt_chars")
    assert "p_value" in pc.method and pc.value < pc.threshold
    assert shifted.report_html.stat().st_size > 10_000 and shifted.report_json.stat().st_size > 100


def test_a_small_window_gets_tabular_drift_without_failing():
    """With the embedding plot in the report, Evidently's embedding drift runs t-SNE (perplexity
    30) and fails on 30 rows or fewer: a monitor with windows of 10 still gets its tabular
    report. Without the plot (the default), the embedding drift needs no t-SNE and small windows
    get it too."""
    rng = np.random.default_rng(3)
    args = (frame(rng, 10), frame(rng, 10, shift=1.0))
    emb = dict(reference_embeddings=embeddings(rng, 10), current_embeddings=embeddings(rng, 10, shift=1.0))
    small = window_drift(*args, numeric=NUMERIC, categorical=CATEGORICAL, embedding_plot=True, **emb)
    assert small.embedding is None and small.features
    assert "prompt_chars" in small.drifted_features
    big_enough = window_drift(frame(rng, 16), frame(rng, 15), numeric=NUMERIC, reference_embeddings=embeddings(rng, 16),
                              current_embeddings=embeddings(rng, 15), embedding_plot=True)
    assert big_enough.embedding is not None
    unplotted = window_drift(*args, numeric=NUMERIC, categorical=CATEGORICAL, **emb)
    assert unplotted.embedding is not None and unplotted.embedding.method == "MMDDriftMethod"
    assert "prompt_chars" in unplotted.drifted_features


def test_the_embedding_drift_is_the_same_with_and_without_the_plot():
    """Off the report, the same Evidently method on the same embeddings gives the same score,
    threshold and verdict; only the report's t-SNE map is missing."""
    rng = np.random.default_rng(11)
    ref, cur = frame(rng, 60), frame(rng, 60, shift=1.0)
    for shift in (0.0, 1.0):
        emb = dict(reference_embeddings=embeddings(rng, 60), current_embeddings=embeddings(rng, 60, shift=shift))
        plotted = window_drift(ref, cur, numeric=NUMERIC, embedding_plot=True, **emb)
        direct = window_drift(ref, cur, numeric=NUMERIC, **emb)
        assert direct.embedding.value == pytest.approx(plotted.embedding.value, rel=1e-9)
        assert (direct.embedding.threshold, direct.embedding.drifted, direct.embedding.method) == (
            plotted.embedding.threshold, plotted.embedding.drifted, plotted.embedding.method)
        assert direct.embedding.drifted == bool(shift)


def test_empty_answers_do_not_fail_the_window():
    """Evidently's non-letter percentage divides by the text's length; an empty answer (a model
    that stops at once) must not fail the window."""
    rng = np.random.default_rng(4)
    ref, cur = frame(rng, 40), frame(rng, 40)
    ref["answer"] = ["A short answer, 42."] * 40
    cur["answer"] = ["", "Another answer!"] * 20
    out = window_drift(ref, cur, numeric=NUMERIC, text=["answer"])
    pct = next(f for f in out.features if f.feature == "answer_non_letter_pct")
    assert pct.drifted   # half the answers are empty now: their share of non-letters moved


def test_unknown_method_is_refused():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="unknown embedding drift method 'nope'"):
        window_drift(frame(rng, 50), frame(rng, 50), numeric=NUMERIC, reference_embeddings=embeddings(rng, 50),
                     current_embeddings=embeddings(rng, 50), method="nope")


def test_completion_features():
    c = events_pb2.CompletionEvent(prompt="abc", answer="hello", latency_ms=12.5, finish_reason="",
                                   usage=common_pb2.Usage(prompt_tokens=3, completion_tokens=2), retrieval_top_score=0.4)
    f = completion_features(c)
    assert f == {"prompt_chars": 3.0, "answer_chars": 5.0, "prompt_tokens": 3.0, "completion_tokens": 2.0,
                 "latency_ms": 12.5, "retrieval_top_score": 0.4, "finish_reason": "unknown"}
    assert set(f) == set(NUMERIC) | set(CATEGORICAL)


async def test_a_window_that_cannot_be_evaluated_is_counted_logged_and_skipped(tmp_path, caplog):
    """The report directory is a file, so saving the Evidently report fails: the engine counts
    the window as an error, logs it, and the monitor goes on with its next window."""
    from llmops.common import metrics
    from llmops.drift.engine import DriftEngine
    from llmops.drift.features import Observation
    from llmops.drift.monitor_config import MonitorSpec
    from llmops.drift.store import DriftStore

    class Sender:
        sent: list = []

        async def send_many(self, messages):
            self.sent.extend(messages)

    blocked = tmp_path / "reports"
    blocked.write_text("not a directory")
    rng = np.random.default_rng(5)
    store = DriftStore(f"sqlite:///{tmp_path}/drift.db")
    engine = DriftEngine([MonitorSpec("m", window_size=20)], store, lambda texts: embeddings(rng, len(texts)),
                         Sender(), {}, reports_dir=blocked, sweep_interval_s=3600)   # the test sweeps itself
    await engine.start()
    errors = metrics.DRIFT_WINDOWS.labels("m", "error")

    def fill(start: int) -> None:
        for i, row in enumerate(frame(rng, 20).to_dict("records")):
            engine.monitors["m"].offer(Observation(f"{start + i:032x}", 1_000 + start + i, has_completion=True,
                                                   features=row, embedding=embeddings(rng, 1)[0]))

    try:
        fill(0)
        first = await engine.close_windows()
        assert len(first) == 1 and first[0].reference is not None    # the reference needs no report
        before = errors._value.get()
        fill(100)
        assert await engine.close_windows() == []                      # skipped, not retried forever
        assert errors._value.get() == before + 1
        assert "could not be evaluated; skipped" in caplog.text and "NotADirectoryError" in caplog.text
        assert engine.monitors["m"].current == {} and not engine.monitors["m"].due()
        fill(200)                                                      # the monitor goes on
        assert await engine.close_windows() == [] and errors._value.get() == before + 2
        assert Sender.sent == []                                       # no report was published for them
    finally:
        await engine.stop()
        store.close()
