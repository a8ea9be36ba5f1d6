"""The drift service's stream side: the late join of scores and feedback to their completion in a
faust table, and the monitors that judge windows of joined completions.

Completions, scores and feedback are keyed by trace id on co-partitioned topics. Each event
updates the trace's entry in the join table (a faust ``Table`` whose changelog survives a
restart; the entry and its merge are in :mod:`llmops.drift.join`). An entry closes when its
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
import json
import logging
from typing import Callable

import numpy as np

from llmops.common import metrics, paging
from llmops.common.bus import EventPublisher
from llmops.common.errors import InvalidArgument, NotFound
from llmops.common.envelope import Record, UndecodableMessage
from llmops.common.events import read_event
from llmops.common.stream import Rejected
from llmops.drift.features import Observation
from llmops.common.times import now_us
from llmops.drift.join import JoinEntry, merge, new_entry, observation
from llmops.drift.monitor import Monitor, Reference, WindowOutcome, new_id
from llmops.drift.monitor_config import MonitorSpec
from llmops.drift.rollout_monitor import RolloutMonitor, UnknownRollout
from llmops.drift.store import DriftStore
from llmops.v1 import drift_pb2, events_pb2

log = logging.getLogger(__name__)

CLOSE_BATCH = 256
MIN_REFERENCE = 10
MAX_PAGE = 500


class UnknownMonitor(NotFound):
    pass


class BadReference(InvalidArgument):
    pass


class DriftEngine:
    def __init__(self, specs: list[MonitorSpec], store: DriftStore, embed: Callable[[list[str]], np.ndarray],
                 sender: EventPublisher, table, *, reports_dir, topic_prefix: str = "llmops.", join_wait_s: float = 30.0,
                 sweep_interval_s: float = 0.5, dlq=None, retention_days: float = 30.0,
                 rollouts: RolloutMonitor | None = None) -> None:
        self.monitors = {s.name: Monitor(s, reports_dir) for s in specs}
        self.store = store
        self.embed = embed
        self.sender = sender
        self.table = table                   # a MutableMapping: the faust join table (or a dict in unit tests)
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
        self.join_lock = asyncio.Lock()      # the join table: the agent and the sweeper
        self.monitor_lock = asyncio.Lock()   # monitor state: the sweeper and SetReference
        self.rollouts = rollouts             # canary rollouts: fed every event before the join
        self._task: asyncio.Task | None = None

    @property
    def topics(self) -> list[str]:
        return list(self.kinds)

    # -- the agent: events into the join table --------------------------------------------------
    async def handle(self, records: list[Record]) -> list[Rejected]:
        """Decode a batch, feed the rollout monitor (it does not wait for the join), and merge
        each event into its trace's join entry. A failed request's completion (``error`` set)
        goes to the rollout monitor only: it is never judged, and it joins no drift window."""
        rejected: list[Rejected] = []
        updates: dict[bytes, JoinEntry] = {}
        if self.rollouts is not None:
            await self.rollouts.config_ready.wait()   # the routes first, so no rollout misses the backlog
        async with self.join_lock:
            now = now_us()
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
                if self.rollouts is not None:
                    self.rollouts.observe(ev)
                if isinstance(ev, events_pb2.CompletionEvent) and ev.error:
                    continue
                tid = ev.trace_id.encode()
                entry = updates.get(tid) or self._entry(tid) or new_entry(now, self.join_wait_us)
                updates[tid] = merge(entry, ev, now, self.join_wait_us)
            for tid, entry in updates.items():
                self.table[tid] = entry.to_dict()
            metrics.DRIFT_PENDING.set(len(self.table))
        if self.rollouts is not None:
            await self.rollouts.flush()   # the decisions this batch made, acknowledged before the batch is
        return rejected

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
        await asyncio.to_thread(self._restore)
        self._task = asyncio.create_task(self._loop(), name="drift-sweeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _restore(self) -> None:
        for m in self.monitors.values():
            self.store.restore(m)
            if m.reference or m.current:
                log.info("monitor %s restored: reference %s, %d completions in the open window, %d drifted in a row",
                         m.spec.name, m.reference.reference_id if m.reference else "-", len(m.current), m.consecutive)

    async def prune(self) -> tuple[int, int]:
        """Drop observations and window summaries past the retention (not those an open window holds)."""
        keep = min((m.last_seq for m in self.monitors.values()), default=0)
        removed = await asyncio.to_thread(self.store.prune, now_us() - self.retention_us, keep)
        if any(removed):
            log.info("drift store: pruned %d observations and %d window summaries past the retention", *removed)
        return removed

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
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
            await asyncio.sleep(self.sweep_interval_s)

    async def sweep(self, now: int | None = None, force: bool = False) -> list[WindowOutcome]:
        """Close the join entries whose wait is over (all of them with ``force``), then judge
        every window that is due. Returns the windows judged."""
        while await self._close_entries(now, force):
            pass
        return await self.close_windows(now)

    async def _close_entries(self, now: int | None, force: bool) -> int:
        async with self.join_lock:
            now = now or now_us()
            entries = [(k, JoinEntry.from_dict(v)) for k, v in list(self.table.items())]
            due = [(k, e) for k, e in entries if force or e.due_us <= now][:CLOSE_BATCH]
            if not due:
                return 0
            obs = [observation(k, e) for k, e in due]
            arrived = {o.trace_id: dict(o.scores) for o in obs}   # what this close adds
            try:
                stored = await self._store(obs)
            except Exception:   # one bad entry must not hold the rest: store one by one, park what fails
                log.exception("drift join: storing %d observations failed; retrying one by one", len(obs))
                stored = []
                for o, (k, e) in zip(obs, due):
                    try:
                        stored += await self._store([o])
                    except Exception as exc:
                        await self._park(k, e, exc)
            for k, _ in due:   # stored or parked; the lock kept the agent from changing them meanwhile
                del self.table[k]
            metrics.DRIFT_PENDING.set(len(self.table))
        async with self.monitor_lock:
            for o, outcome in stored:
                metrics.DRIFT_JOINED.labels(outcome).inc()
                for m in self.monitors.values():
                    if outcome == "new":
                        m.offer(o)
                    elif arrived[o.trace_id]:
                        m.offer_scores(o, arrived[o.trace_id])
        return len(due)

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
        done = []
        for m in self.monitors.values():
            async with self.monitor_lock:
                if not m.due(now):
                    continue
                rows, extra = m.take_window()
            try:
                outcome = await asyncio.to_thread(m.evaluate, rows, extra, now)
            except Exception:
                # a window Evidently cannot evaluate would fail the same way on every retry: count it,
                # log it, and go on with the next (its observations stay in the drift store)
                metrics.DRIFT_WINDOWS.labels(m.spec.name, "error").inc()
                log.exception("monitor %s: a window of %d completions could not be evaluated; skipped",
                              m.spec.name, len(rows))
                continue
            async with self.monitor_lock:
                await self._record(m, outcome)
            done.append(outcome)
        return done

    async def _record(self, m: Monitor, outcome: WindowOutcome) -> None:
        """Persist, publish, then apply: a crash before the state is saved replays the window."""
        created = now_us()
        if outcome.reference is not None:
            await asyncio.to_thread(self.store.save_reference, m.spec.name, outcome.reference)
            log.info("monitor %s: reference %s taken from its first window (%d completions)", m.spec.name,
                     outcome.reference.reference_id, len(outcome.rows))
        else:
            rep = outcome.report
            await asyncio.to_thread(self.store.save_window, rep, created)
            messages = [(f"{self.topic_prefix}drift", m.spec.name, rep, "")]
            if outcome.retrain is not None:
                await asyncio.to_thread(self.store.save_retrain, outcome.retrain)
                messages.append((f"{self.topic_prefix}retrain", m.spec.name, outcome.retrain, ""))
            await self.sender.send_many(messages)
            metrics.DRIFT_WINDOWS.labels(m.spec.name, str(rep.drift_detected).lower()).inc()
            metrics.DRIFT_SHARE.labels(m.spec.name).set(rep.drift_share)
            metrics.DRIFT_REPORT_SECONDS.labels(m.spec.name).observe(rep.seconds)
            for f in rep.features:
                metrics.DRIFT_FEATURE.labels(m.spec.name, f.feature).set(int(f.drifted))
            drifted = [f.feature for f in rep.features if f.drifted]
            log.info("monitor %s: window %s of %d completions: drift=%s share=%.2f drifted=%s", m.spec.name,
                     rep.report_id, rep.window_size, rep.drift_detected, rep.drift_share, ",".join(drifted) or "-")
            if outcome.retrain is not None:
                metrics.RETRAIN_EVENTS.labels(m.spec.name).inc()
                log.warning("monitor %s: retrain event %s: %s", m.spec.name, outcome.retrain.id, outcome.retrain.reason)
        m.apply(outcome)
        await asyncio.to_thread(self.store.save_state, m)

    # -- the API ------------------------------------------------------------------------------
    def monitor(self, name: str) -> Monitor:
        try:
            return self.monitors[name]
        except KeyError:
            raise UnknownMonitor(f"no drift monitor {name!r}; monitors: {', '.join(sorted(self.monitors))}") from None

    def monitors_for(self, name: str = "") -> list[Monitor]:
        """The monitor ``name`` (NOT_FOUND when there is none), or every monitor when ``name`` is empty."""
        return [self.monitor(name)] if name else list(self.monitors.values())

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
            m.set_reference(ref)
            await asyncio.to_thread(self.store.save_state, m)
        log.info("monitor %s: reference %s set from %s (%d completions)", name, ref.reference_id, source, len(rows))
        return ref


def _iso(us: int) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
