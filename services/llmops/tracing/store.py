"""The trace store: one SQLAlchemy implementation for SQLite (default) and PostgreSQL.

Every write is idempotent on its natural key (span: (trace_id, span_id); completion: trace_id;
score: (trace_id, evaluator, version, name); feedback: id), so a Kafka redelivery or a replay
never duplicates data. The schema is owned by Alembic migrations (``migrations/``).
"""
from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.json_format import MessageToDict, ParseDict
from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from llmops.common.errors import AlreadyExists
from llmops.common.paging import decode_page_token, encode_page_token
from llmops.common.sql import SqlDialect, upgrade_schema
from llmops.common.times import now_us, ts_to_us, us_to_ts
from llmops.tracing import schema as t
from llmops.v1 import common_pb2, events_pb2, tracing_pb2

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class TraceQuery:
    start_us: int = 0
    end_us: int = 0
    session_id: str = ""
    user_id: str = ""
    model: str = ""
    page_size: int = 50
    page_token: str = ""
    score_name: str = ""
    evaluator: str = ""
    min_score: float | None = None
    max_score: float | None = None
    # how the request was served (ListTraces' fields, or terms of ``model``: see traces.served_by_filter)
    route: str = ""
    deployment: str = ""
    deployment_version: int = 0       # 0 = any version of ``deployment``
    arm: str = ""


class RunNameTaken(AlreadyExists):
    """An evaluation run of that name exists (ALREADY_EXISTS)."""


class TraceStore(Protocol):
    def write_spans(self, spans: list[events_pb2.SpanEvent]) -> int: ...
    def write_completions(self, completions: list[events_pb2.CompletionEvent]) -> int: ...
    def write_scores(self, scores: list[events_pb2.ScoreEvent]) -> int: ...
    def write_feedback(self, items: list[common_pb2.Feedback]) -> int: ...
    def get_trace(self, trace_id: str) -> tracing_pb2.Trace | None: ...
    def trace_exists(self, trace_id: str) -> bool: ...
    def list_traces(self, query: TraceQuery) -> tuple[list[tracing_pb2.TraceSummary], str]: ...
    def save_eval_run(self, run: tracing_pb2.EvalRun) -> tracing_pb2.EvalRun: ...
    def get_eval_run(self, name_or_id: str) -> tracing_pb2.EvalRun | None: ...
    def list_eval_runs(self, dataset_hash: str = "", limit: int = 50) -> list[tracing_pb2.EvalRun]: ...
    def close(self) -> None: ...


def migrate(engine: Engine) -> None:
    upgrade_schema(engine, MIGRATIONS)


_SPAN_COLUMNS = ("trace_id, span_id, parent_span_id, name, service, start_us, end_us, status, status_message, "
                 "attributes_json")
# {values}: a row's "(...)" repeated, so that one statement writes many rows (see _execute_rows).
# The insert returns the spans it stored (a redelivered one conflicts and is not returned), and
# exactly those are added to their traces, as on PostgreSQL: SQLite has one writer at a time
# (BEGIN IMMEDIATE), so the count stays exact without recounting a trace's spans per write
_SQLITE_SPANS_INSERT = (
    (f"INSERT INTO spans ({_SPAN_COLUMNS}) VALUES {{values}} ON CONFLICT (trace_id, span_id) DO NOTHING "
     "RETURNING trace_id, start_us, end_us, status"),
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_TRACES_ADD = (
    ("INSERT INTO traces (trace_id, start_us, end_us, status, span_count) VALUES {values} "
     "ON CONFLICT (trace_id) DO UPDATE SET start_us = min(traces.start_us, excluded.start_us), "
     "end_us = max(traces.end_us, excluded.end_us), status = max(traces.status, excluded.status), "
     "span_count = traces.span_count + excluded.span_count"),
    "(?, ?, ?, ?, ?)")
_SQLITE_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
# before RETURNING (SQLite < 3.35): the trace's span count recounted from the spans table
_SQLITE_SPANS_INSERT_PLAIN = (_SQLITE_SPANS_INSERT[0].split(" RETURNING ")[0], _SQLITE_SPANS_INSERT[1])
_SQLITE_TRACES_RECOUNT = (
    _SQLITE_TRACES_ADD[0].replace("traces.span_count + excluded.span_count", "excluded.span_count"),
    "(?, ?, ?, ?, (SELECT count(*) FROM spans WHERE trace_id = ?))")
_SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999   # SQLite's default limit


def _execute_rows(cur, statement: tuple[str, str], rows: list[tuple], per_statement: int = 2000) -> list[tuple]:
    """Write ``rows`` with multi-row ``VALUES`` statements of up to ``per_statement`` rows each;
    returns what the statements return (``RETURNING``), in one list.

    ``executemany`` runs one step per row and takes Python's GIL back after each, so a batch
    written beside a busy event loop (the consumer decoding the next fetch) waits up to a switch
    interval per row; a multi-row statement is one step, one wait. Full statements have one text
    (the driver's statement cache prepares it once)."""
    out: list[tuple] = []
    if not rows:
        return out
    sql, row = statement
    per = max(1, min(per_statement, _SQLITE_MAX_VARIABLES // len(rows[0])))
    for i in range(0, len(rows), per):
        chunk = rows[i:i + per]
        cur.execute(sql.format(values=", ".join([row] * len(chunk))), [v for r in chunk for v in r])
        out += cur.fetchall()
    return out


def _traces_of_new_spans(new: list[tuple]) -> list[tuple]:
    """(trace_id, start_us, end_us, status, spans) per trace, in trace order, of the spans a write
    stored: what the write adds to each trace's row."""
    traces: dict[str, list] = {}
    for tid, start, end, status in new:
        b = traces.get(tid)
        if b is None:
            traces[tid] = [start, end, status, 1]
        else:
            b[0] = min(b[0], start)
            b[1] = max(b[1], end)
            b[2] = max(b[2], status)
            b[3] += 1
    return [(tid, *traces[tid]) for tid in sorted(traces)]


_PG_SPAN_BATCH = ("CREATE TEMPORARY TABLE IF NOT EXISTS llmops_span_batch (LIKE spans INCLUDING DEFAULTS) "
                  "ON COMMIT DELETE ROWS")
_PG_SPANS_FROM_BATCH = (
    "WITH fresh AS ("
    f" INSERT INTO spans ({_SPAN_COLUMNS})"
    f" SELECT DISTINCT ON (trace_id, span_id) {_SPAN_COLUMNS} FROM llmops_span_batch ORDER BY trace_id, span_id"
    " ON CONFLICT (trace_id, span_id) DO NOTHING"
    " RETURNING trace_id, start_us, end_us, status), "
    "counted AS ("
    " INSERT INTO traces (trace_id, start_us, end_us, status, span_count)"
    " SELECT trace_id, min(start_us), max(end_us), max(status), count(*) FROM fresh GROUP BY trace_id"
    " ORDER BY trace_id"
    " ON CONFLICT (trace_id) DO UPDATE SET start_us = least(traces.start_us, excluded.start_us),"
    " end_us = greatest(traces.end_us, excluded.end_us), status = greatest(traces.status, excluded.status),"
    " span_count = traces.span_count + excluded.span_count RETURNING 1) "
    "SELECT count(*) FROM fresh")


_to_json = json.JSONEncoder(ensure_ascii=False).encode   # json.dumps(..., ensure_ascii=False), built once


def _span_row(s: events_pb2.SpanEvent) -> tuple:
    start, end = s.start_time, s.end_time
    return (s.trace_id, s.span_id, s.parent_span_id, s.name, s.service, start.seconds * 1_000_000 + start.nanos // 1000,
            end.seconds * 1_000_000 + end.nanos // 1000, s.status, s.status_message, _to_json(dict(s.attributes)))


def _span_wire_class():
    """``SpanEvent``'s wire format with ``attributes`` read as its raw map entries (a map field is
    a repeated entry message on the wire, so the same bytes parse as ``repeated bytes``)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="llmops/tracing/span_wire.proto", package="llmops.tracing",
                                             syntax="proto3")
    fdp.dependency.extend(d.name for d in events_pb2.DESCRIPTOR.dependencies)
    msg = fdp.message_type.add()
    events_pb2.SpanEvent.DESCRIPTOR.CopyToProto(msg)
    msg.name = "SpanWire"
    del msg.nested_type[:]                       # the map's entry type
    for f in msg.field:
        if f.name == "attributes":
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            f.ClearField("type_name")
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(fdp.name)
    except KeyError:
        pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("llmops.tracing.SpanWire"))


#: a span as it comes off Kafka (``SpanEvent``'s bytes), with its attributes left as raw map entries
SpanWire = _span_wire_class()

_encode_string = json.encoder.encode_basestring   # a JSON string, as json.dumps(..., ensure_ascii=False) writes it
_ATTRIBUTE_CACHE_MAX = 32_768                     # entries of at most _ATTRIBUTE_CACHED_BYTES: a few MB
_ATTRIBUTE_CACHED_BYTES = 128
_attribute_cache: dict[bytes, tuple[str, str]] = {}


def _attribute(raw: bytes) -> tuple[str, str]:
    """(key, its JSON member ``"key": "value"``) of one raw map entry (``key = 1``, ``value = 2``,
    either may be absent); ``ValueError`` for anything else (another field, bytes that are not
    UTF-8), which the caller reads the general way. The platform's attributes repeat (model,
    route, template, ...): small entries are remembered."""
    hit = _attribute_cache.get(raw)
    if hit is not None:
        return hit
    try:
        key, value = _entry_fields(raw)
    except IndexError:
        raise ValueError("map entry truncated") from None
    entry = (key, f"{_encode_string(key)}: {_encode_string(value)}")
    if len(raw) <= _ATTRIBUTE_CACHED_BYTES:
        if len(_attribute_cache) >= _ATTRIBUTE_CACHE_MAX:
            _attribute_cache.clear()
        _attribute_cache[raw] = entry
    return entry


def _entry_fields(raw: bytes) -> tuple[str, str]:
    key = value = ""
    i, n = 0, len(raw)
    while i < n:
        tag = raw[i]
        if tag != 10 and tag != 18:              # field 1 or 2, length-delimited
            raise ValueError(f"map entry field tag {tag}")
        size, shift, i = 0, 0, i + 1
        while True:                              # the length, a varint
            b = raw[i]
            size |= (b & 0x7F) << shift
            i += 1
            if b < 0x80:
                break
            shift += 7
            if shift > 28:
                raise ValueError("map entry length too long")
        if i + size > n:
            raise ValueError("map entry truncated")
        text = raw[i:i + size].decode()
        i += size
        if tag == 10:
            key = text
        else:
            value = text
    return key, value


def _wire_span_row(s) -> tuple:
    """:func:`_span_row` of a :data:`SpanWire`: the same row (the attributes' JSON is written from
    the raw entries, a key given twice keeps its last value, as a protobuf map does), without
    building a map and a dict per span. ``ValueError`` for an entry it cannot read."""
    start, end = s.start_time, s.end_time
    entries = s.attributes
    if entries:
        members: dict[str, str] = {}
        for raw in entries:
            key, member = _attribute(raw)
            members[key] = member
        attributes = "{" + ", ".join(members.values()) + "}"
    else:
        attributes = "{}"
    return (s.trace_id, s.span_id, s.parent_span_id, s.name, s.service, start.seconds * 1_000_000 + start.nanos // 1000,
            end.seconds * 1_000_000 + end.nanos // 1000, s.status, s.status_message, attributes)


class SqlTraceStore:
    def __init__(self, url: str, *, run_migrations: bool = True, write_lock_timeout_s: float = 5.0) -> None:
        """``write_lock_timeout_s``: how long a write waits for a lock another session holds
        (SQLite's busy timeout, PostgreSQL's lock_timeout) before it fails as transient."""
        self.url = url
        self.write_lock_timeout_s = write_lock_timeout_s
        sql = SqlDialect(url)
        self.is_sqlite, self.engine, self._insert = sql.is_sqlite, sql.engine, sql.insert
        self._least, self._greatest = sql.least, sql.greatest
        if run_migrations:
            migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ---------------------------------------------------------------------------------
    # The write path goes straight to the driver (sqlite3 / psycopg): one transaction per batch,
    # prepared statements with executemany (SQLite) or COPY into a temporary table and one
    # INSERT ... SELECT (PostgreSQL), and a short lock wait, so a store that refuses writes fails
    # the batch quickly with an error ``retry.is_transient`` recognises (the consumer holds the
    # batch and retries) instead of hanging the consumer for the driver's default 30 s.
    def write_spans(self, spans: list[events_pb2.SpanEvent]) -> int:
        """Store spans once each (a redelivery adds nothing); returns how many were new."""
        if not spans:
            return 0
        return self.write_span_rows([_span_row(s) for s in spans])

    #: a span as the row :meth:`write_span_rows` takes (a consumer may build rows ahead of the write)
    span_row = staticmethod(_span_row)
    #: :attr:`span_row` of a :data:`SpanWire` parsed from a span's bytes (raises ``ValueError`` for
    #: attributes it cannot read: such a span is read as a ``SpanEvent``)
    wire_span_row = staticmethod(_wire_span_row)

    def write_span_rows(self, rows: list[tuple]) -> int:
        """:meth:`write_spans` of spans already made rows by :attr:`span_row`."""
        if not rows:
            return 0
        if self.is_sqlite:
            return self._write_spans_sqlite(rows)
        return self._write_spans_postgres(rows)

    def _write_spans_sqlite(self, rows: list[tuple]) -> int:
        """The spans that are new (``RETURNING``: a redelivered span conflicts and is left out) and,
        in the same transaction, exactly those added to their traces' bounds and span counts."""
        with self._write_tx() as cur:
            if not _SQLITE_HAS_RETURNING:
                before = cur.connection.total_changes
                _execute_rows(cur, _SQLITE_SPANS_INSERT_PLAIN, rows)
                inserted = cur.connection.total_changes - before
                if inserted:
                    traces = _traces_of_new_spans([(r[0], r[5], r[6], r[7]) for r in rows])
                    _execute_rows(cur, _SQLITE_TRACES_RECOUNT, [(*t[:4], t[0]) for t in traces])
                return inserted
            new = _execute_rows(cur, _SQLITE_SPANS_INSERT, rows)
            _execute_rows(cur, _SQLITE_TRACES_ADD, _traces_of_new_spans(new))
        return len(new)

    def _write_spans_postgres(self, rows: list[tuple]) -> int:
        """COPY into a per-connection temporary table, then one statement inserts the new spans in
        key order and adds exactly those to their traces (bounds and span_count): concurrent
        writers and redeliveries neither duplicate nor miscount (test_trace_store_load.py)."""
        with self._write_tx() as cur:
            cur.execute(_PG_SPAN_BATCH)
            with cur.copy(f"COPY llmops_span_batch ({_SPAN_COLUMNS}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
            cur.execute(_PG_SPANS_FROM_BATCH)
            inserted = sum(n for (n,) in cur.fetchall())
        return inserted

    @contextlib.contextmanager
    def _write_tx(self):
        """A driver cursor in one write transaction with a short lock wait; driver errors come out
        as SQLAlchemy's (``OperationalError`` etc., with ``.orig``), so callers and
        ``retry.is_transient`` see one kind of error whatever the path."""
        dbapi = self.engine.dialect.loaded_dbapi
        raw = self.engine.raw_connection()
        invalid = False
        try:
            cur = raw.cursor()
            try:
                if self.is_sqlite:
                    cur.execute(f"PRAGMA busy_timeout = {int(self.write_lock_timeout_s * 1000)}")
                    # fewer, larger checkpoints (each one syncs the database file) and the pages of
                    # recent inserts kept in memory: most of what a batch's commit costs
                    cur.execute("PRAGMA wal_autocheckpoint = 10000")
                    cur.execute("PRAGMA cache_size = -16384")
                    cur.execute("BEGIN IMMEDIATE")
                else:
                    cur.execute(f"SET LOCAL lock_timeout = '{int(self.write_lock_timeout_s * 1000)}ms'")
                yield cur
                raw.commit()
            except BaseException as exc:
                try:
                    raw.rollback()
                except Exception:  # noqa: BLE001 - the connection itself is gone (a server restart): drop it
                    invalid = True
                if isinstance(exc, dbapi.Error):
                    gone = invalid or bool(getattr(raw.driver_connection, "closed", False))
                    raise sa_exc.DBAPIError.instance(None, None, exc, dbapi.Error,
                                                     connection_invalidated=gone) from exc
                raise
            finally:
                if self.is_sqlite and not invalid:
                    with contextlib.suppress(Exception):
                        cur.execute("PRAGMA busy_timeout = 30000")
                with contextlib.suppress(Exception):
                    cur.close()
        finally:
            if invalid:
                raw.invalidate()
            raw.close()

    def write_completions(self, completions: list[events_pb2.CompletionEvent]) -> int:
        if not completions:
            return 0
        rows = []
        for c in completions:
            end = ts_to_us(c.timestamp)
            rows.append({
                "trace_id": c.trace_id, "start_us": end - int(c.latency_ms * 1000), "end_us": end,
                "latency_ms": c.latency_ms, "model": c.model, "session_id": c.session_id,
                "user_id": c.user_id, "prompt": c.prompt, "answer": c.answer,
                "prompt_tokens": c.usage.prompt_tokens, "completion_tokens": c.usage.completion_tokens,
                "cost_usd": c.usage.cost_usd if c.usage.HasField("cost_usd") else None,
                "prompt_template": c.prompt_template, "prompt_version": c.prompt_version,
                "finish_reason": c.finish_reason,
                "metadata_json": json.dumps(dict(c.metadata), ensure_ascii=False),
                "has_completion": 1, "completion_pb": base64.b64encode(c.SerializeToString()).decode(),
                "route": c.route, "route_revision": c.route_revision, "deployment": c.deployment,
                "deployment_version": c.deployment_version, "arm": c.arm, "attempts": c.attempts,
                "fallback": int(c.fallback), "shadow_of": c.shadow_of, "error": c.error,
            })
        rows = _by_key(rows, ("trace_id",))
        cols = list(rows[0])
        least, greatest = ("min", "max") if self.is_sqlite else ("least", "greatest")
        updates = [f"{k} = excluded.{k}" for k in cols if k not in ("trace_id", "start_us", "end_us")]
        updates += [f"start_us = {least}(traces.start_us, excluded.start_us)",
                    f"end_us = {greatest}(traces.end_us, excluded.end_us)"]
        self._upsert("traces", cols, ("trace_id",), ", ".join(updates), rows)
        return len(rows)

    def write_scores(self, items: list[events_pb2.ScoreEvent]) -> int:
        if not items:
            return 0
        rows = [{
            "trace_id": e.trace_id, "evaluator": e.score.evaluator, "version": e.score.version,
            "name": e.score.name, "value": e.score.value, "explanation": e.score.explanation,
            "status": int(e.score.status),
            "created_us": ts_to_us(e.score.created_at) if e.score.HasField("created_at") else now_us(),
        } for e in items]
        rows = _by_key(rows, ("trace_id", "evaluator", "version", "name"))
        self._upsert("scores", list(rows[0]), ("trace_id", "evaluator", "version", "name"),
                     "value = excluded.value, explanation = excluded.explanation, status = excluded.status, "
                     "created_us = excluded.created_us", rows)
        return len(rows)

    def write_feedback(self, items: list[common_pb2.Feedback]) -> int:
        if not items:
            return 0
        rows = [{
            "id": f.id, "trace_id": f.trace_id, "name": f.name or "user", "score": f.score,
            "comment": f.comment, "user_id": f.user_id,
            "created_us": ts_to_us(f.created_at) if f.HasField("created_at") else now_us(),
        } for f in items]
        rows = _by_key(rows, ("id",))
        self._upsert("feedback", list(rows[0]), ("id",), "", rows)
        return len(rows)

    def _upsert(self, table: str, cols: list[str], key: tuple[str, ...], updates: str, rows: list[dict]) -> None:
        """``INSERT ... ON CONFLICT (key) DO UPDATE SET updates`` (``DO NOTHING`` without updates),
        executemany in one write transaction; ``rows`` are in key order (see :func:`_by_key`)."""
        mark = "?" if self.is_sqlite else "%s"
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))}) "
               f"ON CONFLICT ({', '.join(key)}) {action}")
        with self._write_tx() as cur:
            cur.executemany(sql, [tuple(r[c] for c in cols) for r in rows])

    # -- reads ----------------------------------------------------------------------------------
    def trace_exists(self, trace_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(t.traces.c.trace_id).where(t.traces.c.trace_id == trace_id)).first() is not None

    def get_trace(self, trace_id: str) -> tracing_pb2.Trace | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.traces).where(t.traces.c.trace_id == trace_id)).mappings().first()
            if row is None:
                return None
            span_rows = conn.execute(
                select(t.spans).where(t.spans.c.trace_id == trace_id).order_by(t.spans.c.start_us, t.spans.c.span_id)
            ).mappings().all()
            score_rows = conn.execute(
                select(t.scores).where(t.scores.c.trace_id == trace_id).order_by(t.scores.c.name, t.scores.c.evaluator)
            ).mappings().all()
            fb_rows = conn.execute(
                select(t.feedback).where(t.feedback.c.trace_id == trace_id).order_by(t.feedback.c.created_us)
            ).mappings().all()
        trace = tracing_pb2.Trace(trace_id=trace_id, summary=_summary(row))
        if row["completion_pb"]:
            trace.completion.ParseFromString(base64.b64decode(row["completion_pb"]))
        for s in span_rows:
            trace.spans.add(
                trace_id=s["trace_id"], span_id=s["span_id"], parent_span_id=s["parent_span_id"], name=s["name"],
                start_time=us_to_ts(s["start_us"]), end_time=us_to_ts(s["end_us"]),
                attributes=json.loads(s["attributes_json"] or "{}"), status=s["status"],
                status_message=s["status_message"], service=s["service"],
            )
        trace.scores.extend(_score(sc) for sc in score_rows)
        trace.summary.scores.extend(trace.scores)
        for f in fb_rows:
            trace.feedback.add(id=f["id"], trace_id=f["trace_id"], score=f["score"], comment=f["comment"],
                               user_id=f["user_id"], created_at=us_to_ts(f["created_us"]), name=f["name"])
        return trace

    def completion(self, trace_id: str) -> events_pb2.CompletionEvent | None:
        with self.engine.connect() as conn:
            raw = conn.execute(select(t.traces.c.completion_pb).where(t.traces.c.trace_id == trace_id)).scalar()
        if not raw:
            return None
        return events_pb2.CompletionEvent.FromString(base64.b64decode(raw))

    def list_traces(self, q: TraceQuery) -> tuple[list[tracing_pb2.TraceSummary], str]:
        conds = []
        if q.start_us:
            conds.append(t.traces.c.start_us >= q.start_us)
        if q.end_us:
            conds.append(t.traces.c.start_us < q.end_us)
        for col, value in (("session_id", q.session_id), ("user_id", q.user_id), ("model", q.model),
                           ("route", q.route), ("deployment", q.deployment), ("deployment_version", q.deployment_version),
                           ("arm", q.arm)):
            if value:
                conds.append(t.traces.c[col] == value)
        if q.score_name:
            sc = t.scores
            score_conds = [sc.c.trace_id == t.traces.c.trace_id, sc.c.name == q.score_name,
                           sc.c.status != common_pb2.SCORE_STATUS_ERROR]
            if q.evaluator:
                score_conds.append(sc.c.evaluator == q.evaluator)
            if q.min_score is not None:
                score_conds.append(sc.c.value >= q.min_score)
            if q.max_score is not None:
                score_conds.append(sc.c.value <= q.max_score)
            conds.append(exists().where(and_(*score_conds)))
        if q.page_token:
            start, tid = decode_page_token(q.page_token)
            conds.append(or_(t.traces.c.start_us < start, and_(t.traces.c.start_us == start, t.traces.c.trace_id < tid)))
        stmt = (select(t.traces).where(and_(True, *conds))
                .order_by(t.traces.c.start_us.desc(), t.traces.c.trace_id.desc()).limit(q.page_size + 1))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
            page, more = rows[: q.page_size], len(rows) > q.page_size
            scores: dict[str, list] = {}
            if page:
                for sc in conn.execute(select(t.scores).where(t.scores.c.trace_id.in_([r["trace_id"] for r in page]))
                                       .order_by(t.scores.c.name, t.scores.c.evaluator)).mappings():
                    scores.setdefault(sc["trace_id"], []).append(_score(sc))
        token = encode_page_token(page[-1]["start_us"], page[-1]["trace_id"]) if more and page else ""
        out = []
        for r in page:
            summary = _summary(r)
            summary.scores.extend(scores.get(r["trace_id"], []))
            out.append(summary)
        return out, token

    # -- evaluation runs ----------------------------------------------------------------------------
    def save_eval_run(self, run: tracing_pb2.EvalRun) -> tracing_pb2.EvalRun:
        """Store a run with its items; the name must be new (``RunNameTaken`` otherwise)."""
        run = tracing_pb2.EvalRun.FromString(run.SerializeToString())
        run.run_id = run.run_id or uuid.uuid4().hex
        if not run.HasField("created_at"):
            run.created_at.GetCurrentTime()
        run.item_count = len(run.items)
        run.error_count = sum(1 for i in run.items if i.error)
        row = {
            "run_id": run.run_id, "name": run.name, "dataset": run.dataset, "dataset_hash": run.dataset_hash,
            "model": run.model, "prompt_template": run.prompt_template, "prompt_version": run.prompt_version,
            "retrieval": int(run.retrieval), "evaluators_json": json.dumps(list(run.evaluators)),
            "created_us": ts_to_us(run.created_at), "item_count": run.item_count, "error_count": run.error_count,
            "aggregates_json": json.dumps(dict(run.aggregates)), "metadata_json": json.dumps(dict(run.metadata)),
        }
        items = [{
            "run_id": run.run_id, "item_id": it.item_id, "position": i, "question": it.question,
            "reference": it.reference, "answer": it.answer, "contexts_json": json.dumps(list(it.contexts)),
            "trace_id": it.trace_id, "scores_json": json.dumps([MessageToDict(sc) for sc in it.scores]),
            "latency_ms": it.latency_ms, "error": it.error, "metadata_json": json.dumps(dict(it.metadata)),
        } for i, it in enumerate(run.items)]
        try:
            with self.engine.begin() as conn:
                conn.execute(t.eval_runs.insert(), [row])
                if items:
                    conn.execute(t.eval_items.insert(), items)
        except IntegrityError:
            raise RunNameTaken(f"an evaluation run named {run.name!r} already exists; choose another name") from None
        return run

    def get_eval_run(self, name_or_id: str) -> tracing_pb2.EvalRun | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.eval_runs).where(
                or_(t.eval_runs.c.name == name_or_id, t.eval_runs.c.run_id == name_or_id))).mappings().first()
            if row is None:
                return None
            item_rows = conn.execute(select(t.eval_items).where(t.eval_items.c.run_id == row["run_id"])
                                     .order_by(t.eval_items.c.position)).mappings().all()
        run = _eval_run(row)
        for it in item_rows:
            item = run.items.add(item_id=it["item_id"], question=it["question"], reference=it["reference"],
                                 answer=it["answer"], contexts=json.loads(it["contexts_json"]), trace_id=it["trace_id"],
                                 latency_ms=it["latency_ms"], error=it["error"],
                                 metadata=json.loads(it["metadata_json"]))
            for sc in json.loads(it["scores_json"]):
                ParseDict(sc, item.scores.add())
        return run

    def list_eval_runs(self, dataset_hash: str = "", limit: int = 50) -> list[tracing_pb2.EvalRun]:
        stmt = select(t.eval_runs).order_by(t.eval_runs.c.created_us.desc()).limit(limit)
        if dataset_hash:
            stmt = stmt.where(t.eval_runs.c.dataset_hash == dataset_hash)
        with self.engine.connect() as conn:
            return [_eval_run(r) for r in conn.execute(stmt).mappings()]

    def count_spans(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.spans)).scalar() or 0)

    # -- retention --------------------------------------------------------------------------------
    def prune(self, before_us: int, batch: int = 2000) -> dict[str, int]:
        """Delete the traces that started before ``before_us`` with their spans, scores and
        feedback, ``batch`` traces per transaction (ingest waits for one short transaction at a
        time, not for the whole prune); then scores and feedback recorded before it whose trace
        has no row. Eval runs are kept: they are records a team made on purpose. Returns the
        rows deleted per table."""
        out = {"traces": 0, "spans": 0, "scores": 0, "feedback": 0}
        while True:
            with self.engine.begin() as conn:
                ids = [r[0] for r in conn.execute(select(t.traces.c.trace_id).where(t.traces.c.start_us < before_us)
                                                  .limit(batch))]
                if not ids:
                    break
                for name, table in (("spans", t.spans), ("scores", t.scores), ("feedback", t.feedback)):
                    out[name] += conn.execute(delete(table).where(table.c.trace_id.in_(ids))).rowcount or 0
                out["traces"] += conn.execute(delete(t.traces).where(t.traces.c.trace_id.in_(ids))).rowcount or 0
        with self.engine.begin() as conn:   # what came without a trace row (a score of a trace never seen)
            for name, table in (("scores", t.scores), ("feedback", t.feedback)):
                orphan = ~exists().where(t.traces.c.trace_id == table.c.trace_id)
                out[name] += conn.execute(delete(table).where(and_(table.c.created_us < before_us, orphan))).rowcount or 0
        return out


def _by_key(rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """One row per key (the last delivery wins), in key order.

    PostgreSQL refuses an ``ON CONFLICT DO UPDATE`` that touches one row twice, and writers that
    lock rows in different orders deadlock each other: several tracing workers, redeliveries and
    rebalances write overlapping batches at once. Every write takes its row locks in key order
    (spans before their traces), so concurrent writers queue instead of deadlocking
    (tests/integration/test_trace_store_load.py)."""
    last = {tuple(r[k] for k in key): r for r in rows}
    return [last[k] for k in sorted(last)]


#: the summary's metadata keys for how the request was served (TraceSummary has no fields of its own for them)
SERVED_BY_KEYS = {"route": "llmops.route", "route_revision": "llmops.route_revision",
                  "deployment": "llmops.deployment", "deployment_version": "llmops.deployment_version",
                  "arm": "llmops.arm", "attempts": "llmops.attempts", "fallback": "llmops.fallback",
                  "shadow_of": "llmops.shadow_of", "error": "llmops.error"}


def served_by(row) -> dict[str, str]:
    """How the trace's request was served, as ``llmops.*`` metadata: only what is set (a completion
    that came in through OTLP or Kafka has none of it); ``llmops.fallback`` only when it fell back."""
    out = {}
    for col, key in SERVED_BY_KEYS.items():
        value = row[col]
        if col == "fallback":
            value = "true" if value else ""
        elif col in ("route_revision", "deployment_version"):
            value = str(value) if row["route" if col == "route_revision" else "deployment"] else ""
        elif col == "attempts":
            value = str(value) if value else ""
        if value:
            out[key] = value
    return out


def _summary(row) -> tracing_pb2.TraceSummary:
    usage = common_pb2.Usage(prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
                             total_tokens=row["prompt_tokens"] + row["completion_tokens"])
    if row["cost_usd"] is not None:
        usage.cost_usd = row["cost_usd"]
    return tracing_pb2.TraceSummary(
        trace_id=row["trace_id"], start_time=us_to_ts(row["start_us"]), latency_ms=row["latency_ms"] or
        (row["end_us"] - row["start_us"]) / 1000.0, model=row["model"], session_id=row["session_id"],
        user_id=row["user_id"], prompt=row["prompt"], answer=row["answer"], usage=usage,
        prompt_template=row["prompt_template"], prompt_version=row["prompt_version"],
        finish_reason=row["finish_reason"], span_count=row["span_count"],
        metadata={**json.loads(row["metadata_json"] or "{}"), **served_by(row)}, status=row["status"],
        route=row["route"] or "", route_revision=row["route_revision"] or 0, deployment=row["deployment"] or "",
        deployment_version=row["deployment_version"] or 0, arm=row["arm"] or "", attempts=row["attempts"] or 0,
        fallback=bool(row["fallback"]), shadow_of=row["shadow_of"] or "", error=row["error"] or "",
    )


def _score(sc) -> common_pb2.Score:
    return common_pb2.Score(name=sc["name"], value=sc["value"], evaluator=sc["evaluator"], version=sc["version"],
                            explanation=sc["explanation"], status=sc["status"], created_at=us_to_ts(sc["created_us"]))


def _eval_run(row) -> tracing_pb2.EvalRun:
    return tracing_pb2.EvalRun(
        run_id=row["run_id"], name=row["name"], dataset=row["dataset"], dataset_hash=row["dataset_hash"],
        model=row["model"], prompt_template=row["prompt_template"], prompt_version=row["prompt_version"],
        retrieval=bool(row["retrieval"]), evaluators=json.loads(row["evaluators_json"]),
        created_at=us_to_ts(row["created_us"]), item_count=row["item_count"], error_count=row["error_count"],
        aggregates=json.loads(row["aggregates_json"]), metadata=json.loads(row["metadata_json"]),
    )
