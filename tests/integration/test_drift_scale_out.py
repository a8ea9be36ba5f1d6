"""Drift scale-out on the real embedded broker (2 partitions), MiniLM, Evidently and one SQLite
drift store: two drift workers in one consumer group split the monitors between them (each owns
the monitors of its partition of drift-observations), and together they cut the same windows
(ids, counts, bounds) and references as one worker does on the same input."""
from __future__ import annotations

import json
import random

from llmops.cli.client import Client
from llmops.cli.workloads import python_prompts, stream, synthetic_completion
from llmops.common.envelope import encode
from llmops.drift.engine import monitor_partition
from llmops.drift.main import compose
from llmops.drift.store import DriftStore
from llmops.v1 import drift_pb2
from tests.support import ServiceThread, free_port, make_settings, produce, wait_until

WINDOW = 10
PARTITIONS = 2
MONITORS = {"m-a": "model-a", "code": "model-code", "m-b": "model-b", "chat": "model-chat"}   # name -> model
ROUNDS = 3   # the first window of each monitor becomes its reference; then two judged windows


def workload() -> list[list]:
    """ROUNDS rounds of WINDOW completions per monitor, made once: both runs get the same events."""
    rng = random.Random(21)
    prompts = iter(stream(python_prompts(), ROUNDS * WINDOW * len(MONITORS), seed=3))
    rounds = []
    for _ in range(ROUNDS):
        batch = []
        for model in MONITORS.values():
            for _ in range(WINDOW):
                c = synthetic_completion(next(prompts), rng)
                c.model = model
                batch.append(c)
        rng.shuffle(batch)
        rounds.append(batch)
    return rounds


def settings_for(tmp_path, kafka, name: str):
    config = tmp_path / f"{name}-monitors.json"
    config.write_text(json.dumps({"monitors": [{"name": n, "scope": {"model": m}, "window_size": WINDOW}
                                               for n, m in MONITORS.items()]}))
    return make_settings(tmp_path / name, kafka, topic_partitions=PARTITIONS, drift_config=str(config),
                         drift_join_wait_s=0.5)


def second_worker(s, tmp_path):
    """The same service (group, topics, store) on ports and a data directory of its own."""
    return s.model_copy(update={"drift_port": free_port(), "drift_metrics_port": free_port(),
                                "data_dir": tmp_path / "worker-2", "drift_db": s.drift_db_url})


def run(settings_list, rounds, handover_after: int = 0) -> tuple[dict, list]:
    """Start one drift worker per settings (one group), wait until each owns monitors, publish the
    rounds one by one (each once the last one's windows are judged); what the store holds then.
    With ``handover_after``, the last worker stops after that round and the others take over its
    monitors (from the store) for the rounds after it."""
    engines = []

    async def build(s):
        parts, engine = await compose(s)
        engines.append(engine)
        return parts

    threads = []
    s = settings_list[0]
    store = DriftStore(s.drift_db_url)
    try:
        for ws in settings_list:
            threads.append(ServiceThread("drift", ws, build).start())
        wait_until(lambda: len(engines) == len(threads) and all(e.owned for e in engines)
                   and sum(len(e.owned) for e in engines) == len(MONITORS), timeout_s=90,
                   what="every worker to own the monitors of its partitions")
        owned = [set(e.owned) for e in engines]
        for n, batch in enumerate(rounds, 1):
            produce(s.bootstrap_servers, s.topic("completions"), [(c.trace_id.encode(), *encode(c)) for c in batch])

            def judged(n=n):
                return all(store.reference_of(m) and len(store.windows_of(m)) == n - 1 for m in MONITORS)
            wait_until(judged, timeout_s=120, interval_s=0.5, what=f"round {n}'s windows of every monitor")
            if n == handover_after:
                threads.pop().stop()
                gone = engines.pop()
                wait_until(lambda: sum(len(e.owned) for e in engines) == len(MONITORS), timeout_s=90,
                           what=f"the monitors of the stopped worker ({', '.join(sorted(gone.owned))}) to move")
                settings_list = settings_list[:-1]
        # each worker answers GetStatus for every monitor, its own from memory, the others' from the store
        statuses = []
        for ws in settings_list:
            resp = Client(ws).drift.GetStatus(drift_pb2.GetStatusRequest(), timeout=30)
            statuses.append({st.monitor: (st.reference_id, [w.report_id for w in st.recent_windows])
                             for st in resp.monitors})
        windows = {m: [(w.report_id, w.window_size, w.window_start.ToNanoseconds(), w.window_end.ToNanoseconds(),
                        w.reference_id) for w in store.windows_of(m)] for m in MONITORS}
        refs = {m: store.reference_of(m) for m in MONITORS}
        if not handover_after:
            assert [set(e.owned) for e in engines] == owned, "no rebalance during the run"
        return {"windows": windows, "references": refs, "statuses": statuses}, owned
    finally:
        for t in threads:
            t.stop()
        store.close()


def test_two_workers_split_the_monitors_and_cut_the_windows_one_worker_cuts(kafka, tmp_path):
    assert {monitor_partition(m, PARTITIONS) for m in MONITORS} == set(range(PARTITIONS))   # the test's premise
    rounds = workload()

    one, [alone] = run([settings_for(tmp_path, kafka, "one")], rounds)
    assert alone == set(MONITORS)

    s = settings_for(tmp_path, kafka, "two")
    two, owned = run([s, second_worker(s, tmp_path)], rounds)
    assert all(owned) and owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == set(MONITORS)
    for mine in owned:   # a worker owns exactly the monitors keyed to its partition
        assert len({monitor_partition(m, PARTITIONS) for m in mine}) == 1

    for m in MONITORS:
        assert len(one["windows"][m]) == ROUNDS - 1 and all(w[1] == WINDOW for w in one["windows"][m])
    assert two["windows"] == one["windows"]            # ids, counts, bounds and references, window by window
    assert two["references"] == one["references"]
    for status in two["statuses"]:                     # both workers tell the same, for all monitors
        assert status == one["statuses"][0]


def test_a_worker_that_stops_hands_its_monitors_over_and_the_windows_go_on_alike(kafka, tmp_path):
    """The second worker stops after round 2; the first loads its monitors (reference, counters,
    positions) from the store and cuts round 3's windows as one worker alone would."""
    rounds = workload()
    one, _ = run([settings_for(tmp_path, kafka, "one")], rounds)
    s = settings_for(tmp_path, kafka, "two")
    two, owned = run([s, second_worker(s, tmp_path)], rounds, handover_after=2)
    assert all(owned) and owned[0].isdisjoint(owned[1])
    assert two["windows"] == one["windows"] and two["references"] == one["references"]
    assert two["statuses"] == one["statuses"]
