"""The drift service's stream side: the late join of scores and feedback to their completion (its
open entries in the drift store), and the monitors that judge windows of joined completions.

Two stages, so that monitors spread over the workers of one consumer group:

1. **The join**, keyed by trace id (the source topics' key). Closing an entry stores its
   observation and hands it to each monitor whose scope it matches: with ``observations_topic``
   set (the service), as a message on ``<prefix>drift-observations`` keyed by monitor; without
   (tests, benchmarks), straight to the monitors here. A score that comes after its completion's
   close lands on the same trace id partition, merges into the stored row, and goes out keyed by
   the same monitors: it follows its completion to the monitor's partition.
2. **The monitors**, keyed by monitor. A worker owns the monitors of the partitions it was
   assigned (:meth:`DriftEngine.assign`, :meth:`DriftEngine.revoke`) and loads their state from the
   store when it gets them. Each observation a monitor takes gets the next position and is kept as
   a monitor row (once per trace id: a redelivery is not taken twice); a window is the next
   ``window_size`` positions, so a restart or a new owner cuts the same windows, and window,
   reference and retrain-event ids are derived from the window's monitor and trace ids.

A judged window is saved with its monitor's state in one transaction, then published (the
outbox): a crash before the publish publishes it after the restart, a crash after it publishes
it once more with the same id, which the store and the retrain listener keep once.

Completions, scores and feedback are keyed by trace id on co-partitioned topics. Each event
updates the trace's entry in the join table (:class:`~llmops.drift.join_table.JoinTable`: in
memory, written through to the drift store before the batch is acknowledged, so neither a process
nor a broker restart loses it; the entry and its merge are in :mod:`llmops.drift.join`). A worker
of the join's group closes the entries of the source partitions it holds. An entry closes when its
wait is over: ``LLMOPS_DRIFT_JOIN_WAIT_S`` after its completion arrived, or after its first
score when no completion has come. Closing embeds the prompt, stores the observation, and
hands it to every monitor whose scope it matches. What arrives after the close is not lost: a
late score merges into the stored row (and into the open window if the row is still there); a
score whose completion never comes is kept as an orphan row and counts in the quality means of
its window.

Every event also goes to the rollout monitor (:mod:`llmops.drift.rollout_monitor`) as it
arrives, which compares a route's canary with its primary on the judge's scores.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from typing import Callable

import numpy as np

from llmops.common import liveness, metrics, paging
from llmops.common.bus import EventPublisher
from llmops.common.errors import InvalidArgument, NotFound
from llmops.common.envelope import Record, UndecodableMessage
from llmops.common.events import read_event
from llmops.common.stream import Rejected
from llmops.drift.features import Observation
from llmops.common.times import now_us
from llmops.drift.join import JoinEntry, merge, new_entry, observation
from llmops.drift.join_table import JoinTable
from llmops.drift.monitor import Monitor, Reference, WindowOutcome, new_id
from llmops.drift.monitor_config import MonitorSpec, Scope
from llmops.drift.rollout_monitor import RolloutMonitor, UnknownRollout
from llmops.drift.store import DriftStore
from llmops.v1 import drift_pb2, events_pb2

log = logging.getLogger(__name__)

CLOSE_BATCH = 64    # entries a close embeds at once: each close is a unit of progress (seconds on a loaded machine)
MAX_DUE_BACKLOG = 8 * CLOSE_BATCH   # join entries past their wait and not yet closed, before stage 1 waits
MAX_PENDING = 10_000                # join entries in all, before stage 1 waits (a few KB each: the table is in memory)
BACKLOG_POLL_S = 0.5
MIN_REFERENCE = 10
MAX_PAGE = 500
MAX_TEXT_CHARS = 64_000   # of a prompt or an answer on drift-observations: an observation stays a Kafka message


class UnknownMonitor(NotFound):
    pass


def monitor_partition(monitor: str, partitions: int) -> int:
    """The partition of ``drift-observations`` a monitor's key lands on (the producer's default
    partitioner: murmur2 of the key, as Kafka's Java client)."""
    from aiokafka.partitioner import murmur2
    return (murmur2(monitor.encode()) & 0x7FFFFFFF) % partitions


def takes_scores_of(scope: Scope, o: Observation) -> bool:
    """Whether a monitor of ``scope`` gets ``o``: a completion in its scope, or scores with no
    completion that its scope can place (a score alone carries no completion metadata)."""
    if o.has_completion:
        return scope.matches(o)
    return not scope.metadata and scope.matches(o)


def observation_message(monitor: str, o: Observation, arrived: dict[str, float]) -> bytes:
    """A closed observation for ``monitor`` (its stored row, embedding included, and the scores
    this close added), as JSON on ``drift-observations``."""
    d = {f.name: getattr(o, f.name) for f in dataclasses.fields(Observation) if f.name != "embedding"}
    for text in ("prompt", "answer"):   # the features were measured on the whole text; the descriptors need no more
        d[text] = d[text][:MAX_TEXT_CHARS]
    if o.embedding is not None:
        d["embedding"] = base64.b64encode(np.asarray(o.embedding, dtype=np.float32).tobytes()).decode()
    return json.dumps({"monitor": monitor, "observation": d, "arrived": arrived}).encode()


def read_observation_message(value: bytes) -> tuple[str, Observation | None, dict]:
    """(monitor, observation, arrived scores), or (monitor, None, command) for a control message."""
    d = json.loads(value)
    if "command" in d:
        return d["monitor"], None, d["command"]
    o = dict(d["observation"])
    emb = o.pop("embedding", None)
    obs = Observation(**o, embedding=np.frombuffer(base64.b64decode(emb), dtype=np.float32).copy() if emb else None)
    return d["monitor"], obs, dict(d.get("arrived") or {})


class BadReference(InvalidArgument):
    pass


class DriftEngine:
    def __init__(self, specs: list[MonitorSpec], store: DriftStore, embed: Callable[[list[str]], np.ndarray],
                 sender: EventPublisher, table, *, reports_dir, topic_prefix: str = "llmops.", join_wait_s: float = 30.0,
                 sweep_interval_s: float = 0.5, dlq=None, retention_days: float = 30.0,
                 rollouts: RolloutMonitor | None = None, observations_topic: str = "",
                 observation_partitions: int = 1, max_pending: int = MAX_PENDING) -> None:
        self.specs = {s.name: s for s in specs}
        self.reports_dir = reports_dir
        self.monitors = {s.name: Monitor(s, reports_dir) for s in specs}
        # stage 2: with observations_topic the monitors come and go with the partitions this
        # worker is assigned; without it, this engine owns every monitor
        self.observations_topic = observations_topic
        self.observation_partitions = max(1, observation_partitions)
        self.owned: set[str] = set() if observations_topic else set(self.monitors)
        self._unpublished: set[str] = set()   # monitors that may have saved windows not yet published
        self._judging: set[str] = set()       # monitors with a window being evaluated
        self._assigned: set[int] | None = None   # partitions of drift-observations held, once known
        self.store = store
        self.embed = embed
        self.sender = sender
        # the join's open entries: a JoinTable over the store (the service), or over a dict (unit tests)
        self.table = table if isinstance(table, JoinTable) else JoinTable(entries=table)
        self.topic_prefix = topic_prefix
        self.join_wait_us = int(join_wait_s * 1e6)
        self.sweep_interval_s = sweep_interval_s
        self.dlq = dlq                       # DeadLetterQueue for join entries that cannot be stored
        self.retention_us = int(retention_days * 86_400e6)
        self._next_prune = 0.0
        self.kinds = {
            f"{topic_prefix}completions": events_pb2.CompletionEvent,
            f"{topic_prefix}scores": events_pb2.ScoreEvent,
            f"{topic_prefix}feedback": events_pb2.FeedbackEvent,
        }
        self.join_topics = list(self.kinds)
        self.join_lock = asyncio.Lock()      # the join table: the agent and the sweeper (never held across a close's embedding)
        self.close_lock = asyncio.Lock()     # one close at a time
        self._closing: set[bytes] = set()    # keys whose entry is being closed (embedded, stored, routed)
        self._closed_total = 0               # entries closed since start (the agent waits on it under a backlog)
        self._closed = asyncio.Event()       # set after each close
        self.max_pending = max(CLOSE_BATCH, max_pending)
        self.monitor_lock = asyncio.Lock()   # monitor state: the sweeper and SetReference
        self.rollouts = rollouts             # canary rollouts: fed every event before the join
        self._task: asyncio.Task | None = None

    @property
    def topics(self) -> list[str]:
        return self.join_topics + ([self.observations_topic] if self.observations_topic else [])

    @property
    def monitors_consumer(self) -> MonitorsConsumer:
        """Stage 2 alone, for a consumer of its own on ``observations_topic``: stage 1 waits for
        room in the join under a backlog, and stage 2 must never wait behind it."""
        return MonitorsConsumer(self)

    def partition_of(self, monitor: str) -> int:
        return monitor_partition(monitor, self.observation_partitions)

    # -- the agent: events into the join table --------------------------------------------------
    async def handle(self, records: list[Record]) -> list[Rejected]:
        """Decode a batch, feed the rollout monitor (it does not wait for the join), and merge
        each event into its trace's join entry. A failed request's completion (``error`` set)
        goes to the rollout monitor only: it is never judged, and it joins no drift window."""
        rejected: list[Rejected] = []
        if self.observations_topic and any(r.topic == self.observations_topic for r in records):
            rejected += await self._handle_observations([r for r in records if r.topic == self.observations_topic])
            records = [r for r in records if r.topic != self.observations_topic]
            if not records:
                return rejected
        updates: dict[bytes, JoinEntry] = {}
        partition: dict[bytes, int] = {}
        if self.rollouts is not None:
            await self.rollouts.config_ready.wait()   # the routes first, so no rollout misses the backlog
        events = []
        for r in records:
            kind = self.kinds.get(r.topic)
            if kind is None:
                rejected.append(Rejected(r, f"drift does not consume topic {r.topic!r}", "UnexpectedTopic"))
                continue
            try:
                ev = read_event(r, kind)
            except UndecodableMessage as exc:
                rejected.append(Rejected(r, str(exc)))
                continue
            if self.rollouts is not None:   # the rollout monitor never waits behind the join's embedding
                self.rollouts.observe(ev)
            events.append((ev, r.partition))
        if self.rollouts is not None:
            await self.rollouts.flush()   # the decisions this batch made, acknowledged before the batch is
        await self._wait_for_room()
        async with self.join_lock:
            now = now_us()
            for ev, p in events:
                if isinstance(ev, events_pb2.CompletionEvent) and ev.error:
                    continue
                tid = ev.trace_id.encode()
                partition[tid] = p
                # an entry being closed is the close's: what comes meanwhile is late, and starts its own
                # entry (it merges into the stored row when it closes, as a late score always did)
                entry = updates.get(tid) or (None if tid in self._closing else self._entry(tid)) \
                    or new_entry(now, self.join_wait_us)
                updates[tid] = merge(entry, ev, now, self.join_wait_us)
            # stored before the batch is acknowledged: a transient store failure holds the batch
            await self.table.put({tid: (partition[tid], e.to_dict()) for tid, e in updates.items()})
            metrics.DRIFT_PENDING.set(len(self.table))
        return rejected

    async def _wait_for_room(self) -> None:
        """Stage 1 waits while the join holds more entries past their wait than the sweeper can
        close soon (embedding is the drift service's bottleneck): the join table stays bounded,
        and the records wait in Kafka, not in memory. Each close meanwhile is progress
        (:func:`liveness.still_working`), so a backlog far beyond drift's capacity is slow, not
        stuck; a sweeper that closes nothing says nothing, and the watchdog sees the stall."""
        seen = self._closed_total
        while self._due_now() > MAX_DUE_BACKLOG or len(self.table) >= self.max_pending:
            self._closed.clear()
            try:
                await asyncio.wait_for(self._closed.wait(), BACKLOG_POLL_S)
            except TimeoutError:
                pass
            if self._closed_total != seen:
                seen = self._closed_total
                liveness.still_working()

    def _due_now(self) -> int:
        """Join entries past their wait now, counted afresh (a count the sweeper left at its last
        close is stale after a burst: the first batches of a backlog came in before any close, and
        the join took thousands of entries, minutes of embedding, before it waited)."""
        now = now_us()
        return sum(1 for v in list(self.table.values()) if v is not None and v["due"] <= now)

    def _entry(self, key: bytes) -> JoinEntry | None:
        stored = self.table.get(key)
        return JoinEntry.from_dict(stored) if stored else None

    # -- the sweeper: close due entries, then due windows -------------------------------------
    async def start(self) -> None:
        for name in self.monitors:   # export zeros from the start: "no retrain event yet" is data, not a gap
            metrics.RETRAIN_EVENTS.labels(name)
            metrics.DRIFT_REPORT_SECONDS.labels(name)   # so that rate() sees the first window as an increase
            for drifted in ("true", "false"):
                metrics.DRIFT_WINDOWS.labels(name, drifted)
        await asyncio.to_thread(self._restore)   # the monitors owned from the start (all, without a topic)
        self._unpublished |= self.owned
        self._task = asyncio.create_task(self._loop(), name="drift-sweeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _restore(self) -> None:
        for name in sorted(self.owned):
            self.monitors[name] = self._load(name)

    def _load(self, name: str, quiet: bool = False) -> Monitor:
        """A fresh monitor ``name``, restored from the store (a thread: it reads)."""
        m = Monitor(self.specs[name], self.reports_dir)
        self.store.restore(m)
        if not quiet and (m.reference or m.current):
            log.info("monitor %s restored: reference %s, %d completions in the open window, %d drifted in a row",
                     name, m.reference.reference_id if m.reference else "-", len(m.current), m.consecutive)
        return m

    # -- ownership: the join entries of this worker's partitions of the source topics ---------
    async def join_revoked(self) -> None:
        """A rebalance of the join's group began: no entry is closed until the assignment is known
        (a close in flight finishes first: it holds the close lock)."""
        async with self.close_lock, self.join_lock:
            self.table.release()

    async def join_assigned(self, partitions: set[int]) -> None:
        """The join's worker holds ``partitions`` of the source topics: their open entries are read
        from the store (the others are their new owner's)."""
        async with self.close_lock, self.join_lock:
            await self.table.keep_only(partitions)
            metrics.DRIFT_PENDING.set(len(self.table))

    # -- ownership: the monitors of this worker's partitions of drift-observations --------------
    async def assign(self, partitions: set[int]) -> None:
        """This worker now holds ``partitions`` of drift-observations: load their monitors."""
        names = [n for n in self.monitors if self.partition_of(n) in partitions and n not in self.owned]
        async with self.monitor_lock:
            self._assigned = (self._assigned or set()) | partitions
            for n in names:
                await self._own(n)
        if names:
            log.info("drift: this worker owns monitors %s (partitions %s)", ", ".join(sorted(self.owned)),
                     ",".join(map(str, sorted(partitions))))

    async def revoke(self, partitions: set[int]) -> None:
        """``partitions`` went to another worker: their monitors are its to load from the store."""
        async with self.monitor_lock:
            self._assigned = (self._assigned or set()) - partitions
            for n in [n for n in self.owned if self.partition_of(n) in partitions]:
                self.owned.discard(n)
                self._unpublished.discard(n)
                self.monitors[n] = Monitor(self.specs[n], self.reports_dir)   # stale from now on

    async def _own(self, name: str) -> Monitor:
        """Load ``name`` and own it (the caller holds the monitor lock)."""
        self.monitors[name] = await asyncio.to_thread(self._load, name)
        self.owned.add(name)
        self._unpublished.add(name)   # a window saved by the owner before may wait for its publish
        return self.monitors[name]

    # -- stage 2: observations into the monitors they belong to -------------------------------
    async def _handle_observations(self, records: list[Record]) -> list[Rejected]:
        rejected, items = [], []
        for r in records:
            try:
                items.append(read_observation_message(r.value))
            except (ValueError, KeyError, TypeError) as exc:
                rejected.append(Rejected(r, f"not a drift observation: {exc!r}", "UndecodableMessage"))
        unknown = [(r, i) for r, i in zip(records, items) if i[0] not in self.monitors]
        if unknown:   # a monitor no longer configured: nothing to take it
            log.warning("drift: %d observations for monitors not configured here (%s); dropped", len(unknown),
                        ", ".join(sorted({i[0] for _, i in unknown})))
        await self.observe([i for i in items if i[0] in self.monitors])
        return rejected

    async def observe(self, items: list[tuple[str, Observation | None, dict]]) -> None:
        """Observations for monitors, in the order their partition delivered them. A completion
        new to its monitor takes the next position (kept as a monitor row before the batch is
        acknowledged); one the monitor took before updates its row's scores, or its scores count
        in the open window; scores alone count in the open window's means."""
        async with self.monitor_lock:
            fresh: dict[str, dict[str, tuple[Observation, dict, int]]] = {}
            for name, o, arrived in items:
                if name not in self.owned:
                    if self._assigned is not None and self.partition_of(name) not in self._assigned:
                        continue   # fetched before its partition was revoked: the new owner reads it again
                    await self._own(name)   # the partition is ours: its message says so
                m = self.monitors[name]
                if o is None:
                    await self._command(m, arrived)
                    continue
                row = m.current.get(o.trace_id)
                if row is not None:
                    row.scores.update(o.scores)
                elif o.has_completion and m.spec.scope.matches(o):
                    batch = fresh.setdefault(name, {})
                    if o.trace_id in batch:   # twice in one batch: one row, the later scores
                        batch[o.trace_id][0].scores.update(o.scores)
                    else:
                        batch[o.trace_id] = (o, arrived, m.next_pos + len(batch))
                elif arrived:
                    m.offer_scores(o, arrived)
            for name, by_id in fresh.items():
                m, batch = self.monitors[name], list(by_id.values())
                added = await asyncio.to_thread(self.store.add_rows, name,
                                                [(o.trace_id, pos, o.ts_us) for o, _, pos in batch])
                for o, arrived, pos in batch:
                    if o.trace_id in added:
                        m.offer(o, pos)
                    elif arrived:   # its row is in a closed window: its new scores count in this one
                        m.offer_scores(o, arrived)
                m.next_pos = max(m.next_pos, batch[-1][2] + 1)

    async def _command(self, m: Monitor, command: dict) -> None:
        """A control message for the owner: a reference set through a worker that does not own it."""
        ref_id = command.get("set_reference", "")
        if ref_id and (m.reference is None or m.reference.reference_id != ref_id):
            ref = await asyncio.to_thread(self.store.load_reference, ref_id)
            if ref is not None:
                m.set_reference(ref)
                await asyncio.to_thread(self.store.save_state, m)
                log.info("monitor %s: reference %s set through another worker", m.spec.name, ref_id)

    async def prune(self) -> tuple[int, int]:
        """Drop observations and window summaries past the retention (not those an open window holds)."""
        # the store keeps the observations of every monitor's open window (its rows after its last
        # closed window), whoever owns the monitor; no sequence bound is needed on top of that
        removed = await asyncio.to_thread(self.store.prune, now_us() - self.retention_us, 2**62)
        if any(removed):
            log.info("drift store: pruned %d observations and %d window summaries past the retention", *removed)
        return removed

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.sweep()
                if self.rollouts is not None:
                    await self.rollouts.flush()   # decisions whose publishing failed are retried here
                if loop.time() >= self._next_prune:
                    self._next_prune = loop.time() + 3600
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:  # the sweeper must outlive any one bad batch; the entries stay in the table
                log.exception("drift sweep failed; retrying")
                await asyncio.sleep(5)

    async def sweep(self, now: int | None = None, force: bool = False) -> list[WindowOutcome]:
        """Close the join entries whose wait is over (all of them with ``force``), then judge
        every window that is due. Returns the windows judged."""
        done: list[WindowOutcome] = []
        while True:   # windows between closes: a backlog of entries never holds the windows back
            closed = await self._close_entries(now, force)
            done += await self.close_windows(now)
            if not closed:
                return done

    async def _close_entries(self, now: int | None, force: bool) -> int:
        """Close up to ``CLOSE_BATCH`` entries whose wait is over. The join lock is held only to
        pick them and to drop them: embedding, storing and routing (seconds to minutes for a batch
        on a loaded machine) run while the agent goes on merging events (an event for a key being
        closed starts an entry of its own, which closes later and merges into the stored row)."""
        async with self.close_lock:
            async with self.join_lock:
                now = now or now_us()
                due_all = [(k, v) for k, v in list(self.table.items())
                           if v is not None and (force or v["due"] <= now) and self.table.owns(k)]
                due = due_all[:CLOSE_BATCH]
                if not due:
                    self._closed.set()
                    return 0
                self._closing = {k for k, _ in due}
            try:
                entries = [(k, JoinEntry.from_dict(v)) for k, v in due]
                obs = [observation(k, e) for k, e in entries]
                arrived = {o.trace_id: dict(o.scores) for o in obs}   # what this close adds
                try:
                    stored = await self._store(obs)
                except Exception:   # one bad entry must not hold the rest: store one by one, park what fails
                    log.exception("drift join: storing %d observations failed; retrying one by one", len(obs))
                    stored = []
                    for o, (k, e) in zip(obs, entries):
                        try:
                            stored += await self._store([o])
                        except Exception as exc:
                            await self._park(k, e, exc)
                items = []
                for o, outcome in stored:
                    metrics.DRIFT_JOINED.labels(outcome).inc()
                    # every stored row goes out, whatever the store made of it: a close retried after a
                    # failed publish finds its completion stored ("merged") and must still hand it on;
                    # the monitors take a trace id once
                    items += [(name, o, arrived.get(o.trace_id, {}))
                              for name, spec in self.specs.items() if takes_scores_of(spec.scope, o)]
                await self._route(items)   # before the entries go: a failed hand-off closes them again
                async with self.join_lock:
                    # stored or parked; an entry the agent replaced meanwhile is a late one
                    await self.table.remove([k for k, v in due if self.table.get(k) is v or self.table.get(k) == v])
                    metrics.DRIFT_PENDING.set(len(self.table))
            finally:
                self._closing = set()
            self._closed_total += len(due)
            self._closed.set()
        return len(due)

    async def _route(self, items: list[tuple[str, Observation, dict]]) -> None:
        """Hand closed observations to their monitors: keyed by monitor on drift-observations (each
        goes to the worker that owns it), or straight to this engine's monitors."""
        if not self.observations_topic:
            await self.observe(items)
            return
        headers = [("content-type", b"application/json")]
        await asyncio.gather(*(self.sender.send_raw(self.observations_topic, name.encode(),
                                                    observation_message(name, o, arrived), headers)
                               for name, o, arrived in items))

    async def _store(self, obs: list[Observation]) -> list[tuple[Observation, str]]:
        need = [o for o in obs if o.has_completion]
        if need:
            vectors = await asyncio.to_thread(self.embed, [o.prompt for o in need])
            for o, v in zip(need, vectors):
                o.embedding = np.asarray(v, dtype=np.float32)
        return await asyncio.to_thread(self.store.upsert, obs)

    async def _park(self, key: bytes, entry: JoinEntry, exc: Exception) -> None:
        """A join entry that cannot be stored goes to the dead-letter topic, as JSON, with the reason."""
        if self.dlq is None:
            raise exc
        rec = Record(topic=f"{self.topic_prefix}drift-join", partition=-1, offset=-1, key=key,
                     value=json.dumps(entry.to_dict()).encode(), headers=[], timestamp_ms=now_us() // 1000)
        await self.dlq.send(rec, f"drift join entry could not be stored: {exc!r}", type(exc).__name__)

    async def close_windows(self, now: int | None = None) -> list[WindowOutcome]:
        """Judge every due window of the monitors this worker owns, then publish what is saved
        and not yet published."""
        done = []
        for name in sorted(self.owned):
            while True:   # every due window, in order: a close under a backlog makes several due at once
                async with self.monitor_lock:
                    m = self.monitors[name]
                    if name not in self.owned or name in self._judging or not m.due(now):
                        break   # one window of a monitor at a time: the next is judged against its outcome
                    rows, extra = m.take_window()
                    self._judging.add(name)
                try:
                    n = len(done)
                    await self._judge(m, rows, extra, now, done)
                finally:
                    self._judging.discard(name)
                if len(done) == n:
                    break   # skipped or revoked: the next sweep goes on
        await self.publish_pending()
        return done

    async def _judge(self, m: Monitor, rows: list[Observation], extra: list, now: int | None,
                     done: list[WindowOutcome]) -> None:
        """Evaluate a window taken from ``m`` and record its outcome."""
        name = m.spec.name
        try:
            outcome = await asyncio.to_thread(m.evaluate, rows, extra, now)
        except Exception:
            # a window Evidently cannot evaluate would fail the same way on every retry: count it,
            # log it, and go on with the next (its observations stay in the drift store)
            metrics.DRIFT_WINDOWS.labels(name, "error").inc()
            log.exception("monitor %s: a window of %d completions could not be evaluated; skipped", name, len(rows))
            async with self.monitor_lock:   # its rows are done with: the next window starts after them
                if self.monitors.get(name) is m:
                    m.skip(rows)
                    await asyncio.to_thread(self.store.save_state, m)
            return
        async with self.monitor_lock:
            if self.monitors.get(name) is not m:   # revoked meanwhile: the new owner judges it again
                return
            try:
                await self._record(m, outcome)
            except Exception:
                m.put_back(rows, extra)   # not saved: judged again on the next sweep, under the same ids
                raise
        done.append(outcome)
        liveness.still_working()   # a handler that judges windows is slow, not stuck

    async def _record(self, m: Monitor, outcome: WindowOutcome) -> None:
        """Apply, then save the window with the monitor's state in one transaction (the outbox);
        publishing comes after (:meth:`publish_pending`). A crash before the save judges the same
        window again after the restart, under the same ids; one after it publishes what was saved."""
        name = m.spec.name
        before = m.snapshot()
        m.apply(outcome)
        try:
            await asyncio.to_thread(self.store.commit_window, m, outcome, now_us())
        except Exception:
            m.restore_snapshot(before)
            raise
        if outcome.reference is not None:
            log.info("monitor %s: reference %s taken from its first window (%d completions)", name,
                     outcome.reference.reference_id, len(outcome.rows))
            return
        self._unpublished.add(name)
        rep = outcome.report
        metrics.DRIFT_WINDOWS.labels(name, str(rep.drift_detected).lower()).inc()
        metrics.DRIFT_SHARE.labels(name).set(rep.drift_share)
        metrics.DRIFT_REPORT_SECONDS.labels(name).observe(rep.seconds)
        for f in rep.features:
            metrics.DRIFT_FEATURE.labels(name, f.feature).set(int(f.drifted))
        drifted = [f.feature for f in rep.features if f.drifted]
        log.info("monitor %s: window %s of %d completions: drift=%s share=%.2f drifted=%s", name,
                 rep.report_id, rep.window_size, rep.drift_detected, rep.drift_share, ",".join(drifted) or "-")
        if outcome.retrain is not None:
            metrics.RETRAIN_EVENTS.labels(name).inc()
            log.warning("monitor %s: retrain event %s: %s", name, outcome.retrain.id, outcome.retrain.reason)

    async def publish_pending(self) -> int:
        """Publish the saved windows and retrain events the broker has not acknowledged, of the
        monitors this worker owns; mark them published. A failure leaves them for the next sweep."""
        sent = 0
        for name in sorted(self._unpublished & self.owned):
            items = await asyncio.to_thread(self.store.unpublished, name)
            if items:
                topic = {"drift": f"{self.topic_prefix}drift", "retrain": f"{self.topic_prefix}retrain"}
                try:
                    await self.sender.send_many([(topic[kind], name, ev, "") for kind, _id, ev in items])
                except Exception as exc:
                    log.warning("monitor %s: publishing %d saved window events failed (%r); retrying on the next "
                                "sweep", name, len(items), exc)
                    continue
                await asyncio.to_thread(self.store.mark_published, [(kind, i) for kind, i, _ in items])
                sent += len(items)
            self._unpublished.discard(name)
        return sent

    # -- the API ------------------------------------------------------------------------------
    def monitor(self, name: str) -> Monitor:
        try:
            return self.monitors[name]
        except KeyError:
            raise UnknownMonitor(f"no drift monitor {name!r}; monitors: {', '.join(sorted(self.monitors))}") from None

    def monitors_for(self, name: str = "") -> list[Monitor]:
        """The monitor ``name`` (NOT_FOUND when there is none), or every monitor when ``name`` is empty."""
        return [self.monitor(name)] if name else list(self.monitors.values())

    async def status_of(self, name: str = "") -> list[Monitor]:
        """As :meth:`monitors_for`, with the state of a monitor another worker owns read from the
        store (as its owner last saved it)."""
        out = []
        for m in self.monitors_for(name):
            n = m.spec.name
            out.append(m if n in self.owned else await asyncio.to_thread(self._load, n, True))
        return out

    def rollout_status(self, route: str = "") -> list[drift_pb2.RolloutStatus]:
        """The canary rollout of ``route`` (NOT_FOUND when no canary of it was seen), or of every
        route with a canary when ``route`` is empty."""
        if self.rollouts is None:
            if route:
                raise UnknownRollout(f"no canary seen for route {route!r}: this drift service watches no rollouts")
            return []
        return self.rollouts.status(route)

    async def list_retrain_events(self, monitor: str = "", page_size: int = 0,
                                  page_token: str = "") -> tuple[list[events_pb2.RetrainEvent], str]:
        """Retrain events newest first, of one monitor (NOT_FOUND when there is none) or of all,
        and the token of the next page ("" after the last)."""
        size = paging.page_size(page_size, MAX_PAGE)
        if monitor:
            self.monitor(monitor)   # NOT_FOUND for a monitor that does not exist
        return await asyncio.to_thread(self.store.list_retrain, monitor, size, page_token)

    async def set_reference(self, name: str, start_us: int = 0, end_us: int = 0, first_n: int = 0) -> Reference:
        """A new reference from the completions of a time range, or the first N the monitor saw."""
        if not name:
            raise BadReference(f"monitor is empty; monitors: {', '.join(sorted(self.monitors))}")
        m = self.monitor(name)
        if first_n < 0:
            raise BadReference(f"first_n must be positive, got {first_n}")
        has_range = bool(start_us or end_us)
        if has_range == bool(first_n):
            raise BadReference("give either a time range (start_time and end_time) or first_n, not both or neither")
        if has_range and (not start_us or not end_us or end_us <= start_us):
            raise BadReference("the time range is empty: end_time must come after start_time, and both are needed")

        def pick() -> tuple[list[Observation], str]:
            if has_range:
                rows = [o for o in self.store.completions_between(start_us, end_us) if m.spec.scope.matches(o)]
                return rows, f"{_iso(start_us)}..{_iso(end_us)}"
            rows = []
            for o in self.store.observations_after(0):
                if o.has_completion and m.spec.scope.matches(o):
                    rows.append(o)
                    if len(rows) == first_n:
                        break
            return rows, f"first {first_n}"

        rows, source = await asyncio.to_thread(pick)
        if len(rows) < MIN_REFERENCE or (first_n and len(rows) < first_n):
            want = first_n or MIN_REFERENCE
            raise BadReference(f"monitor {name!r} has {len(rows)} completions in {source}; a reference needs "
                               f"{'at least ' if not first_n else ''}{want}")
        ref = Reference(new_id(f"ref-{name}"), rows, now_us(), source)
        async with self.monitor_lock:
            await asyncio.to_thread(self.store.save_reference, name, ref)
            if name in self.owned:
                m = self.monitors[name]
                m.set_reference(ref)
                await asyncio.to_thread(self.store.save_state, m)
            else:   # the owner applies it (its state in memory is the truth), told on the monitor's partition
                command = {"monitor": name, "command": {"set_reference": ref.reference_id}}
                await self.sender.send_raw(self.observations_topic, name.encode(), json.dumps(command).encode(),
                                           [("content-type", b"application/json")])
        log.info("monitor %s: reference %s set from %s (%d completions)", name, ref.reference_id, source, len(rows))
        return ref


class MonitorsConsumer:
    """The batch consumer of drift-observations (stage 2), apart from the join's."""

    def __init__(self, engine: DriftEngine) -> None:
        self.engine = engine

    async def handle(self, records: list[Record]) -> list[Rejected]:
        return await self.engine._handle_observations(records)


def _iso(us: int) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
