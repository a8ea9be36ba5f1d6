"""The watchdog's verdicts on its consumers, and the supervisor's restart books (no I/O)."""
from pathlib import Path

from llmops.cli.stack import Stack
from llmops.common.liveness import ConsumerProgress
from llmops.common.settings import Settings
from llmops.common.watchdog import EXIT_BROKER_RESET, EXIT_CONSUMER_DEAD, EXIT_CONSUMER_STALLED, Verdict, Watchdog


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_retrying_is_not_serving_while_it_lasts_and_serving_again_after():
    clock = Clock()
    a, b = ConsumerProgress("a", clock=clock), ConsumerProgress("b", clock=clock)
    a.joined(), b.joined()
    dog = Watchdog(lambda: [a, b], stall_s=60)
    assert dog.check().serving
    a.retrying("the trace store is away")
    v = dog.check()
    assert not v.serving and v.exit_code == 0 and "the trace store is away" in v.reason
    clock.t += 10
    a.progressed(5)
    assert dog.check().serving and dog.states() == {"a": "ok", "b": "ok"}


def test_a_dead_consumer_ends_the_process_with_its_own_code():
    a = ConsumerProgress("ingest")
    a.joined()
    a.died("DLQ send failed")
    v = Watchdog(lambda: [a], stall_s=60).check()
    assert (v.serving, v.exit_code) == (False, EXIT_CONSUMER_DEAD) and "DLQ send failed" in v.reason


def test_work_without_progress_for_the_stall_limit_ends_the_process():
    clock = Clock()
    a = ConsumerProgress("lag:judging", clock=clock)
    a.joined()
    dog = Watchdog(lambda: [a], stall_s=30)
    a.in_hand = 50                 # lag behind it, committed offsets not moving
    clock.t += 29
    assert dog.check().serving
    clock.t += 2
    v = dog.check()
    assert (v.serving, v.exit_code) == (False, EXIT_CONSUMER_STALLED) and dog.states() == {"lag:judging": "stalled"}
    idle = ConsumerProgress("idle", clock=clock)    # nothing to do is never a stall
    idle.joined()
    clock.t += 1000
    assert Watchdog(lambda: [idle], stall_s=30).check().serving


def test_checks_of_its_own_and_dead_before_retrying():
    a, b = ConsumerProgress("a"), ConsumerProgress("b")
    a.retrying("broker away")
    reset = Verdict(False, EXIT_BROKER_RESET, "the broker lost its state")
    assert Watchdog(lambda: [a], 60, [lambda: reset]).check().exit_code == EXIT_BROKER_RESET
    b.died("boom")
    assert Watchdog(lambda: [a, b], 60, [lambda: None]).check().exit_code == EXIT_CONSUMER_DEAD


def test_supervisor_backs_off_doubling_and_gives_up_after_repeated_failures(tmp_path: Path):
    lines: list[str] = []
    s = Settings(data_dir=tmp_path, restart_max_failures=4, restart_window_s=60)
    stack = Stack(s, services=("tracing",), on_progress=lines.append)
    r = stack.restarts["tracing"]
    t = r.started_at + 1
    delays = []
    for i in range(3):
        assert stack._exited("service 'tracing'", "tracing", -9, tmp_path / "x.log", t) is None
        delays.append(r.due_at - t)
        r.due_at, r.started_at = None, t + delays[-1]
        t += delays[-1] + 1
    assert delays == [1.0, 2.0, 4.0] and r.total == 3
    assert "exited with code -9: restarting it in 1s (restart #1; 1 of 4" in lines[0]
    report = stack._exited("service 'tracing'", "tracing", 3, tmp_path / "x.log", t)
    assert report and "exited 4 times within 60s (last exit code 3): giving up" in report


def test_a_component_that_ran_for_the_window_starts_its_backoff_again(tmp_path: Path):
    stack = Stack(Settings(data_dir=tmp_path, restart_max_failures=3, restart_window_s=10), services=("drift",))
    r = stack.restarts["drift"]
    t = r.started_at + 1
    stack._exited("d", "drift", 1, tmp_path / "x.log", t)
    r.due_at, r.started_at = None, t + 1
    t += 100                                  # ran long after its restart: a new failure
    assert stack._exited("d", "drift", 1, tmp_path / "x.log", t) is None
    assert r.due_at - t == 1.0 and len(r.exits) == 1


def test_a_crashed_faust_app_or_agent_marks_its_consumer_dead():
    from types import SimpleNamespace

    from llmops.common.runtime import faust_crash_check

    agent = SimpleNamespace(crashed=False, crash_reason=None)
    app = SimpleNamespace(crashed=False, crash_reason=None, agents={"judge_cheap": agent})
    worker = SimpleNamespace(crashed=False, crash_reason=None)
    progress = ConsumerProgress("faust:judging")
    progress.joined()
    check = faust_crash_check(app, worker, progress)
    assert check() is None and progress.state == "ok"
    agent.crashed, agent.crash_reason = True, RuntimeError("DLQ send failed")
    v = check()
    assert v.exit_code == EXIT_CONSUMER_DEAD and progress.state == "dead"
    assert "agent judge_cheap crashed" in progress.reason and "DLQ send failed" in progress.reason


def test_a_long_retry_is_not_a_stall():
    clock = Clock()
    a = ConsumerProgress("ingest", clock=clock)
    a.joined()
    a.fetched(100)
    a.retrying("PostgreSQL restarting")
    clock.t += 3600
    v = Watchdog(lambda: [a], stall_s=30).check()
    assert (v.serving, v.exit_code) == (False, 0) and "PostgreSQL restarting" in v.reason
    lag = ConsumerProgress("lag:tracing", clock=clock)   # the group's committed offsets stand still meanwhile
    lag.joined()
    lag.in_hand = 500
    clock.t += 3600
    dog = Watchdog(lambda: [a, lag], stall_s=30, clock=clock)
    assert dog.check().exit_code == 0
    a.progressed(100)            # the retry succeeded; the lag view has not been measured since
    clock.t += 5
    assert dog.check().serving
    clock.t += 26                # a whole stall limit after the retry, and still nothing committed
    assert dog.check().exit_code == EXIT_CONSUMER_STALLED


def test_a_slow_batch_whose_handler_still_works_is_not_a_stall_and_a_silent_one_is():
    import asyncio

    from llmops.common.batch_handling import handle_batch
    from llmops.common.envelope import Record
    from llmops.common.liveness import still_working

    clock = Clock()
    agent = ConsumerProgress("app.judging-llm/judge_llm", clock=clock)
    group = ConsumerProgress("lag:app.judging-llm", clock=clock)
    agent.joined(), group.joined()
    dog = Watchdog(lambda: [agent, group], stall_s=300, clock=clock)
    seen = []

    class SlowJudge:       # each judge-model call takes 200 s of the clock; four calls per batch
        async def handle(self, records):
            for _ in range(4):
                clock.t += 200
                await asyncio.to_thread(still_working)   # a call done (threads see the consumer too)
                seen.append(dog.check())
            return []

    records = [Record("completions", 0, i, b"k", b"v", [], 0) for i in range(4)]
    group.in_hand = 40                                  # lag behind it; offsets stand still meanwhile
    asyncio.run(handle_batch(SlowJudge(), records, dlq=None, progress=agent))
    assert all(v.serving for v in seen), [v.reason for v in seen]
    assert agent.handled == 4
    # a handler that hangs says nothing: the agent and the group's offsets are then stuck
    agent.fetched(4)
    clock.t += 301
    v = dog.check()
    assert (v.serving, v.exit_code) == (False, EXIT_CONSUMER_STALLED)
    assert still_working() is None                      # outside a handler it does nothing


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice():
    """A port an outgoing connection may take as its source port (the ephemeral range) is never
    picked for a service that binds later; nor is one this process picked before."""
    import socket

    from llmops.cli.stack import _ephemeral_low, free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= p < _ephemeral_low() for p in ports)
    with socket.socket() as s:   # and each is free to bind
        s.bind(("127.0.0.1", ports[-1]))
