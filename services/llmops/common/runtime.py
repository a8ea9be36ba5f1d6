"""Runs one service process: logging, metrics, the gRPC server first, then its parts (event bus,
faust worker), SERVING once they are ready, a health watchdog while it runs, and an orderly stop
on SIGTERM that ends within ``LLMOPS_SHUTDOWN_GRACE_S``.

The watchdog (:mod:`llmops.common.watchdog`) reads every consumer's
:class:`~llmops.common.liveness.ConsumerProgress` once a second: a consumer that is retrying makes
the service NOT_SERVING while it lasts; one that is dead or stuck (work and no progress for
``LLMOPS_CONSUMER_STALL_S``) makes it NOT_SERVING and the process exit non-zero (codes in
:mod:`llmops.common.watchdog`), so that its supervisor restarts it. A :class:`TopicKeeper` keeps
the topics while the service runs (an in-memory broker that restarted lost them); a service whose
consumers cannot rejoin a reset broker in place (faust tables: their changelogs are gone) exits so
that it is restarted clean.
"""
from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from llmops.common import metrics
from llmops.common.liveness import ConsumerProgress
from llmops.common.logging import configure_logging
from llmops.common.metrics import serve_metrics
from llmops.common.server import GrpcServer
from llmops.common.settings import Settings
from llmops.common.signals import install_stop_signals
from llmops.common.startup import StartupClock
from llmops.common.watchdog import (
    EXIT_BROKER_RESET,
    EXIT_CONSUMER_DEAD,
    EXIT_SHUTDOWN_OVERRUN,
    STATES,
    Check,
    Verdict,
    Watchdog,
)

log = logging.getLogger(__name__)

#: seconds between two looks of the watchdog
WATCH_INTERVAL_S = 1.0


@dataclass
class ServiceParts:
    """What a composition root hands the runtime."""
    register: Callable[[GrpcServer], None]            # adds servicers to the server
    service_names: list[str]                          # full names, for health and reflection
    start: Callable[[], Awaitable[None]]              # after the gRPC server is up
    stop: Callable[[], Awaitable[None]]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: every consumer's progress, read by the watchdog (may grow while the parts start)
    progress: list[ConsumerProgress] = field(default_factory=list)
    #: checks of their own (a crashed faust app): a Verdict when something is wrong
    checks: list[Check] = field(default_factory=list)
    #: False when a consumer cannot rejoin a broker that lost its state (a faust table): the process exits
    rejoins_after_broker_reset: bool = True
    #: the Kafka cluster the parts' state was built for, when it was read before the topic keeper
    #: starts: the keeper's first look must find it, or that is a broker reset
    cluster_id: str = ""
    #: loop time by which ``stop`` must have finished (set by the runtime before it calls stop)
    stop_deadline: float = 0.0
    #: the phases of this start (set by the runtime before it calls start; ``start`` marks its own)
    startup: StartupClock = field(default_factory=StartupClock)

    def time_left(self, reserve_s: float = 0.0) -> float:
        """Seconds of the stop budget left, less ``reserve_s`` kept for later steps (at least 0.1)."""
        if not self.stop_deadline:
            return 3600.0
        return max(0.1, self.stop_deadline - asyncio.get_running_loop().time() - reserve_s)


def progress_of(part) -> list[ConsumerProgress]:
    """The ConsumerProgress a worker or companion exposes as ``.progress`` (one, a list, or none)."""
    p = getattr(part, "progress", None)
    if isinstance(p, ConsumerProgress):
        return [p]
    if isinstance(p, (list, tuple)):
        return [x for x in p if isinstance(x, ConsumerProgress)]
    return []


def faust_crash_check(app, worker, progress: ConsumerProgress) -> Check:
    """A crashed faust worker, app or agent (mode's ``Service.crash``: the service stops, the
    process lives on) marks ``progress`` dead."""
    def check() -> Verdict | None:
        if progress.state == "dead":
            return None   # the watchdog reads it from the progress
        for what, svc in (("worker", worker), ("app", app), *((f"agent {n}", a) for n, a in app.agents.items())):
            if getattr(svc, "crashed", False):
                reason = getattr(svc, "crash_reason", None)
                progress.died(f"faust {what} crashed: {reason!r}")
                return Verdict(False, EXIT_CONSUMER_DEAD, f"consumer {progress.name} is dead: {progress.reason}")
        return None

    return check


def _hook_agent_errors(app, progress: ConsumerProgress) -> None:
    """An exception out of a faust agent marks its app's consumer dead (faust would restart the
    actor and go on after the records it held)."""
    for name, agent in app.agents.items():
        previous = getattr(agent, "_on_error", None)

        async def on_error(agent_, exc, previous=previous, name=name) -> None:
            progress.died(f"faust agent {name} raised {exc!r}")
            if previous is not None:
                await previous(agent_, exc)

        agent._on_error = on_error


def _stop_within(part, budget_s: float) -> Awaitable:
    """``part.stop()``, told its budget when it takes one (a consumer then drains what it holds
    within it and still leaves its group, instead of being cancelled halfway)."""
    if "grace_s" in inspect.signature(part.stop).parameters:
        return part.stop(grace_s=max(0.1, budget_s - 0.5))
    return part.stop()


async def _bounded(what: str, aw: Awaitable, timeout_s: float) -> None:
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(aw, timeout_s)
        if time.monotonic() - t0 > 0.5:
            log.info("stopping %s took %.1fs", what, time.monotonic() - t0)
    except TimeoutError:
        log.error("stopping %s took longer than its %.1fs share of LLMOPS_SHUTDOWN_GRACE_S: cut short", what, timeout_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # a client's own task cancelled inside its close (aiokafka's fetcher with the broker gone)
        log.warning("stopping %s: a task of its own was cancelled while it closed", what)
    except Exception:
        log.exception("stopping %s failed", what)


def streaming_parts(settings: Settings, bus, app, register: Callable[[GrpcServer], None], service_names: list[str],
                    close: Callable[[], None] = lambda: None, companions: Sequence = (),
                    loading: Sequence[Callable[[], Awaitable[None]]] = ()) -> ServiceParts:
    """Parts of a service that consumes with faust: topics, then the bus, then one worker per app
    (``app`` may be a list: each app is its own consumer group), then ``companions`` (objects with
    ``start``/``stop``, e.g. a lag monitor); ready once every worker has joined its group and
    everything in ``loading`` is done. Stops in reverse order within the stop budget, the bus's flush
    last with what remains of it.

    ``loading``: what the composition root started and the service needs before it is SERVING
    (a model loading in a thread of its own, :class:`llmops.embedding.LoadingEmbedder`), each a
    function returning an awaitable that ends once it is there (or raises if it failed). They are
    awaited from the start, alongside the topics and the group joins: a join waits on the broker
    (on Tansu, half the session timeout) and a model load is CPU, so the two overlap instead of
    adding up. A consumer that gets records before its model is there waits for it in its worker
    thread.

    Each faust app is a consumer of its own for the watchdog (``faust:<group>``, dead when the app
    or an agent crashed); a companion with a ``.progress`` (a :class:`ConsumerProgress` or a list)
    adds its own."""
    from llmops.common.stream import run_worker
    from llmops.common.topics import ensure_topics

    apps = list(app) if isinstance(app, (list, tuple)) else [app]
    ready = asyncio.Event()
    workers: list = []

    async def load_all() -> None:
        clock = parts.startup
        began = clock.now()
        await asyncio.gather(*(f() for f in loading))
        clock.mark("models (alongside the join)", since=began)

    async def start() -> None:
        clock = parts.startup
        models = asyncio.create_task(load_all(), name="loading") if loading else None
        try:
            await ensure_topics(settings)
            clock.mark("topics")
            await bus.start()
            clock.mark("event bus")
            joining = clock.now()

            async def start_worker(a) -> None:
                ev = asyncio.Event()
                progress = ConsumerProgress(f"faust:{a.conf.id}")
                _hook_agent_errors(a, progress)
                w = await run_worker(a, ev)   # returns once the app has joined its group (and recovered its tables)
                workers.append(w)
                parts.progress.append(progress)
                parts.progress.extend(getattr(a, "llmops_progress", ()))   # each batch agent's own (stream.batch_agent)
                parts.checks.append(faust_crash_check(a, w, progress))
                await ev.wait()
                progress.joined()

            # each app is a group of its own: they join at once (one after the other, judging's two
            # groups took two joins, 18 s instead of 9)
            async with asyncio.TaskGroup() as group:
                for a in apps:
                    group.create_task(start_worker(a), name=f"start faust worker {a.conf.id}")
            if apps:
                clock.mark("group join" if len(apps) == 1 else f"group joins ({len(apps)})", since=joining)
            for c in companions:
                began = clock.now()
                await c.start()
                parts.progress.extend(progress_of(c))
                label = getattr(c, "name", None)
                clock.mark(f"start {label if isinstance(label, str) else type(c).__name__}", since=began)
            parts.progress.extend(progress_of(bus))
            if models is not None:
                await models
        except BaseException:
            if models is not None and not models.done():
                models.cancel()
            raise
        ready.set()

    async def stop() -> None:
        bus_share = min(5.0, parts.time_left() / 3)   # the flush of what the request path buffered
        # each faust worker keeps a share too: one cut short leaves its consumer thread running, and the
        # process cannot exit (a raw consumer draining its queue used to take all of the budget)
        faust_share = min(3.0, parts.time_left() / 4) * len(workers)
        for c in reversed(companions):
            budget = parts.time_left(bus_share + faust_share)
            await _bounded(type(c).__name__, _stop_within(c, budget), budget)
        for w in reversed(workers):
            await _bounded(f"faust worker {w.app.conf.id}", w.stop(), parts.time_left(bus_share))
        left = parts.time_left(0.5)
        await _bounded("the event bus", bus.stop(timeout_s=max(0.1, left / 2 - 0.2)), left)
        close()

    # a stateless faust app rejoins a reset broker in place (measured: its group re-joined and it read the
    # re-created topics from their start within 5 s); a table's changelog is gone with the broker, so a
    # service with tables exits to rebuild them from scratch
    parts = ServiceParts(register, service_names, start, stop, ready,
                         rejoins_after_broker_reset=not any(len(a.tables) for a in apps))
    return parts


def _export_startup(service: str, clock: StartupClock) -> None:
    metrics.STARTUP_SECONDS.labels(service, "total").set(clock.total())
    for phase, seconds in clock.phases.items():
        metrics.STARTUP_SECONDS.labels(service, phase).set(seconds)


def _export_states(service: str, states: dict[str, str]) -> None:
    for consumer, state in states.items():
        for st in STATES:
            metrics.CONSUMER_STATE.labels(service, consumer, st).set(1 if st == state else 0)


async def _watch(name: str, server: GrpcServer, watchdog: Watchdog, stop: asyncio.Event, outcome: dict) -> None:
    serving = True
    while not stop.is_set():
        v = watchdog.check()
        _export_states(name, watchdog.states())
        if v.exit_code:
            log.error("%s: %s; NOT_SERVING, and the process exits with code %d so that its supervisor restarts it",
                      name, v.reason, v.exit_code)
            await server.set_serving(False)
            outcome["code"] = v.exit_code
            stop.set()
            return
        if v.serving != serving:
            serving = v.serving
            await server.set_serving(serving)
            if serving:
                log.info("%s: every consumer makes progress again: SERVING", name)
            else:
                log.warning("%s: NOT_SERVING while %s", name, v.reason)
        try:
            await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
        except TimeoutError:
            pass


def _hard_exit_after(seconds: float, name: str, code: int = EXIT_SHUTDOWN_OVERRUN) -> threading.Timer:
    """The stop's last resort: a process that has not ended ``seconds`` after SIGTERM (a part that
    ignores cancellation, a thread in the executor) exits with ``code``."""
    def cut() -> None:
        log.error("%s did not end within %.0fs more: exiting with code %d", name, seconds, code)
        logging.shutdown()
        os._exit(code)

    t = threading.Timer(seconds, cut)
    t.daemon = True
    t.start()
    return t


async def run_service(name: str, settings: Settings, build: Callable[[Settings], Awaitable[ServiceParts]],
                      stop_event: asyncio.Event | None = None, *, owns_process: bool = False) -> int:
    """Run the service until SIGTERM/SIGINT (or ``stop_event``) or its watchdog ends it; the
    process's exit code (0 after an ordinary stop). ``owns_process`` (``llmops serve``): the
    process is this service's alone, so a stop that overruns its budget ends it with ``os._exit``."""
    from llmops.common.kafka import refuse_topic_auto_creation
    from llmops.common.topics import TopicKeeper

    configure_logging(name, settings.log_level, settings.log_format)
    if owns_process:   # process-wide, so not for a service embedded in a test or a host application
        refuse_topic_auto_creation()   # topics come from ensure_topics and the keeper, with their partition counts
    clock = StartupClock()
    serve_metrics(settings.host, settings.metrics_port(name), max_label_values=settings.metrics_max_label_values)
    parts = await build(settings)
    clock.mark("build")
    parts.startup = clock
    server = GrpcServer(name, settings, parts.service_names)
    parts.register(server)
    stop = stop_event or asyncio.Event()
    install_stop_signals(stop)
    keeper = TopicKeeper(settings, cluster_id=parts.cluster_id or None)
    outcome = {"code": 0}

    def broker_reset() -> Verdict | None:
        if keeper.resets and not parts.rejoins_after_broker_reset:
            return Verdict(False, EXIT_BROKER_RESET, f"{keeper.reset_reason}; its faust tables cannot be kept in place")
        return None

    watchdog = Watchdog(lambda: parts.progress, settings.consumer_stall_s, [broker_reset, lambda: _any(parts.checks)])
    watch: asyncio.Task | None = None
    await server.start()
    clock.mark("gRPC server")
    try:
        starting = asyncio.create_task(parts.start())
        await asyncio.wait([starting, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():   # stopped while starting
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        else:
            starting.result()
            await parts.ready.wait()
            # what start-up built (models, tables, clients) lives as long as the service: moved out of the
            # collector's reach, so a full collection no longer walks it and stalls the event loop (about
            # 50 ms every 1.5 s on the gateway's path before; under 1 ms after)
            gc.collect()
            gc.freeze()
            began = clock.now()
            await keeper.start()
            clock.mark("topic keeper", since=began)
            await server.set_serving(True)
            log.info("%s is serving: SERVING %.1fs after its process started (%s)", name, clock.total(), clock.summary())
            _export_startup(name, clock)
            watch = asyncio.create_task(_watch(name, server, watchdog, stop, outcome), name="watchdog")
            await stop.wait()
    finally:
        budget = settings.shutdown_grace_s
        loop = asyncio.get_running_loop()
        parts.stop_deadline = loop.time() + budget
        timer = _hard_exit_after(budget + 3.0, name) if owns_process else None
        log.info("%s: stopping (within %.0fs: draining RPCs, then consumers, then the publisher)", name, budget)
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        await _bounded("the gRPC server", server.stop(min(settings.grpc_grace_seconds, budget / 3)), budget / 3 + 1)
        await _bounded("the keeper of topics", keeper.stop(), 2.0)
        await _bounded(f"{name}'s parts", parts.stop(), parts.time_left())
        log.info("%s stopped", name)
        if timer is not None:
            timer.cancel()   # what remains (asyncio.run's clean-up) gets a last few seconds of its own
            _hard_exit_after(3.0, name, outcome["code"])
    return outcome["code"]


def _any(checks: list[Check]) -> Verdict | None:
    for c in checks:
        v = c()
        if v is not None:
            return v
    return None
