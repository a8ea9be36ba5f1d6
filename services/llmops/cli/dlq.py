"""``llmops dlq list`` and ``llmops dlq replay``: what the consumers dead-lettered, and sending it
back to its source topic once the cause is fixed.

A dead letter on ``<prefix>dlq`` is the original record byte for byte (key, value, headers) with
``dlq-*`` headers saying where it came from (source topic, partition, offset, consumer group) and
why (reason, error, time); see :class:`llmops.common.bus.DeadLetterQueue`.

Replay is idempotent. A dead letter is named by its source coordinates (topic/partition/offset),
and every one replayed is written, after the broker acknowledged the re-published record, to
the compacted ledger topic ``<prefix>dlq.replayed`` keyed by those coordinates. A replay skips
what the ledger holds, so replaying the same selection twice sends nothing the second time; a
record that several consumer groups dead-lettered is re-published once (every group reads it
again from the source topic). A replay cut between the send and its ledger entry sends that one
record again next time, which the sinks absorb (they are idempotent by natural keys).
"""
from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import click

from llmops.cli.console import load_settings, make_console
from llmops.common.settings import Settings

#: the ledger of replayed dead letters (compacted; key = source topic/partition/offset)
LEDGER = "dlq.replayed"
#: header a replayed record carries: the source coordinates of the dead letter it came from
REPLAYED_FROM = "dlq-replayed-from"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class DeadLetter:
    dlq_partition: int
    dlq_offset: int
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    error: str
    consumer_group: str
    dead_lettered_ms: int
    key: bytes | None = field(repr=False)
    value: bytes | None = field(repr=False)
    headers: list[tuple[str, bytes]] = field(repr=False, default_factory=list)

    @property
    def source_id(self) -> str:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    @property
    def replayable(self) -> bool:
        return bool(self.source_topic) and self.source_offset >= 0 and self.value is not None

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.lower().startswith("dlq-")]

    def as_json(self, replayed: dict | None = None) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("key", "value", "headers")}
        d["time"] = iso(self.dead_lettered_ms)
        d["key"] = self.key.decode(errors="replace") if self.key is not None else None
        d["value_bytes"] = len(self.value) if self.value is not None else None
        d["headers"] = {k: v.decode(errors="replace") for k, v in self.original_headers()}
        d["replayed"] = replayed
        return d


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else ""


def parse_since(text: str, now_s: float | None = None) -> int:
    """Epoch milliseconds of ``--since``: an ISO 8601 time (UTC when it has no offset) or a
    duration back from now (``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``)."""
    now_s = time.time() if now_s is None else now_s
    t = text.strip()
    parts = _DURATION.findall(t)
    if parts and _DURATION.sub("", t).strip() == "":
        return int((now_s - sum(float(n) * _UNIT_S[u] for n, u in parts)) * 1000)
    try:
        when = datetime.fromisoformat(t)   # Python 3.11 reads a trailing Z
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither an ISO 8601 time (2026-12-01T18:00:00Z) nor a "
                                 "duration (30s, 15m, 2h, 1d)", param_hint="--since") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _header(headers, name: str) -> bytes | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _int(v: bytes | None, default: int = -1) -> int:
    try:
        return int(v.decode()) if v else default
    except ValueError:
        return default


def dead_letter_of(msg) -> DeadLetter:
    headers = [(k, bytes(v) if v is not None else b"") for k, v in (msg.headers or ())]

    def text(name: str) -> str:
        v = _header(headers, name)
        return v.decode(errors="replace") if v is not None else ""

    return DeadLetter(
        dlq_partition=msg.partition, dlq_offset=msg.offset, source_topic=text("dlq-source-topic"),
        source_partition=_int(_header(headers, "dlq-source-partition")),
        source_offset=_int(_header(headers, "dlq-source-offset")), reason=text("dlq-reason"),
        error=text("dlq-error"), consumer_group=text("dlq-consumer-group"),
        dead_lettered_ms=_int(_header(headers, "dlq-timestamp-ms"), int(msg.timestamp or 0)),
        key=msg.key, value=msg.value, headers=headers)


async def read_topic(settings: Settings, topic: str, timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` up to its end when called (no consumer group, nothing committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from llmops.common.kafka import client_options

    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=int(timeout_s * 1000))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()   # a fresh client may not know the topic yet
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout_s
        pending = {tp for tp in tps if end[tp] > 0}
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s:.0f}s")
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, msgs in batches.items():
                out += [m for m in msgs if m.offset < end[tp]]
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        return out
    finally:
        await consumer.stop()


async def read_dead_letters(settings: Settings) -> list[DeadLetter]:
    msgs = await read_topic(settings, settings.topic("dlq"))
    return sorted((dead_letter_of(m) for m in msgs), key=lambda d: (d.dead_lettered_ms, d.dlq_partition, d.dlq_offset))


async def read_ledger(settings: Settings) -> dict[str, dict]:
    """Source id → what its replay recorded (the newest entry of each key, as compaction keeps it)."""
    out: dict[str, dict] = {}
    for m in await read_topic(settings, settings.topic(LEDGER)):
        if m.key is None:
            continue
        try:
            out[m.key.decode()] = json.loads(m.value) if m.value else {}
        except ValueError:
            out[m.key.decode()] = {}
    return out


def select(letters: list[DeadLetter], settings: Settings, *, topic: str = "", since_ms: int = 0, reason: str = "",
           limit: int = 0) -> list[DeadLetter]:
    """The dead letters that match every filter; with ``limit``, the newest ``limit`` of them."""
    topics = {topic, settings.topic(topic)} if topic else set()
    needle = reason.lower()
    out = [d for d in letters
           if (not topics or d.source_topic in topics)
           and d.dead_lettered_ms >= since_ms
           and (not needle or needle in d.reason.lower() or needle in d.error.lower())]
    return out[-limit:] if limit else out


async def ensure_ledger(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from llmops.common.kafka import client_options

    name = settings.topic(LEDGER)
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=30_000)
    await admin.start()
    try:
        if name not in set(await admin.list_topics()):
            try:
                await admin.create_topics([NewTopic(name, 1, settings.topic_replication,
                                                    topic_configs={"cleanup.policy": "compact"})])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


@dataclass
class ReplayResult:
    replayed: list[DeadLetter] = field(default_factory=list)
    already: list[DeadLetter] = field(default_factory=list)        # in the ledger: replayed before
    duplicates: list[DeadLetter] = field(default_factory=list)     # same source record dead-lettered again
    unreplayable: list[DeadLetter] = field(default_factory=list)   # no source, or sent without its value


def plan_replay(letters: list[DeadLetter], ledger: dict[str, dict]) -> ReplayResult:
    plan = ReplayResult()
    seen: set[str] = set()
    for d in letters:
        if not d.replayable:
            plan.unreplayable.append(d)
        elif d.source_id in ledger:
            plan.already.append(d)
        elif d.source_id in seen:
            plan.duplicates.append(d)
        else:
            seen.add(d.source_id)
            plan.replayed.append(d)
    return plan


async def replay(settings: Settings, letters: list[DeadLetter], *, dry_run: bool = False) -> ReplayResult:
    """Re-publish ``letters`` (those not replayed before) to their source topics, and record each
    in the ledger once the broker acknowledged it."""
    from aiokafka import AIOKafkaProducer

    from llmops.common.kafka import producer_options

    plan = plan_replay(letters, await read_ledger(settings))
    if dry_run or not plan.replayed:
        return plan
    await ensure_ledger(settings)
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    ledger = settings.topic(LEDGER)
    try:
        for d in plan.replayed:
            headers = d.original_headers() + [(REPLAYED_FROM, d.source_id.encode())]
            partition = None
            if d.key is None:     # an unkeyed record goes back to the partition it came from, if it still exists
                parts = await producer.partitions_for(d.source_topic)
                partition = d.source_partition if d.source_partition in parts else None
            meta = await producer.send_and_wait(d.source_topic, d.value, key=d.key, headers=headers,
                                                partition=partition)
            entry = {"replayed_ms": int(time.time() * 1000), "to_partition": meta.partition, "to_offset": meta.offset,
                     "dlq_partition": d.dlq_partition, "dlq_offset": d.dlq_offset}
            await producer.send_and_wait(ledger, json.dumps(entry).encode(), key=d.source_id.encode())
    finally:
        await producer.stop()
    return plan


# -- the commands ------------------------------------------------------------------------------------

def _filters(f):
    f = click.option("--limit", type=int, default=0, help="Only the newest N (after the other filters).")(f)
    f = click.option("--reason", default="", help="Only dead letters whose reason or error contains this (any case).")(f)
    f = click.option("--since", default="", metavar="ISO|DURATION",
                     help="Only those dead-lettered since then: 2026-12-01T18:00:00Z, or 30m, 2h, 1d back.")(f)
    f = click.option("--topic", default="", help="Only those from this source topic (`spans` or `llmops.spans`).")(f)
    return f


def _selected(settings: Settings, topic: str, since: str, reason: str, limit: int) -> list[DeadLetter]:
    since_ms = parse_since(since) if since else 0
    return select(asyncio.run(read_dead_letters(settings)), settings, topic=topic, since_ms=since_ms, reason=reason,
                  limit=limit)


@click.group()
def dlq() -> None:
    """Dead letters: list what the consumers could not handle, and replay it after a fix."""


@dlq.command("list")
@_filters
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter, one a line.")
def list_(topic: str, since: str, reason: str, limit: int, as_json: bool) -> None:
    """Show dead letters: where each came from, why, when, its key, and whether it was replayed."""
    from rich.markup import escape
    from rich.table import Table

    settings = load_settings()
    letters = _selected(settings, topic, since, reason, limit)
    ledger = asyncio.run(read_ledger(settings)) if letters else {}
    if as_json:
        for d in letters:
            sys.stdout.write(json.dumps(d.as_json(ledger.get(d.source_id))) + "\n")
        return
    console = make_console()
    if not letters:
        console.print(f"no dead letters on {settings.topic('dlq')}" + (" match" if topic or since or reason else ""))
        return
    table = Table()
    table.add_column("time", no_wrap=True)
    table.add_column("source (topic/partition/offset)", no_wrap=True)
    for col in ("group", "error", "reason", "key", "replayed"):
        table.add_column(col)
    for d in letters:
        key = d.key.decode(errors="replace")[:40] if d.key is not None else "-"
        done = ledger.get(d.source_id)
        table.add_row(iso(d.dead_lettered_ms), d.source_id, d.consumer_group, escape(d.error), escape(d.reason[:160]),
                      escape(key), iso(done.get("replayed_ms", 0)) if done is not None else "")
    console.print(table)
    console.print(f"{len(letters)} dead letters")


@dlq.command("replay")
@_filters
@click.option("--dry-run", is_flag=True, help="Show what would be re-published; send nothing.")
def replay_(topic: str, since: str, reason: str, limit: int, dry_run: bool) -> None:
    """Re-publish dead letters to their source topics (original key, value and headers; dlq-*
    headers removed, dlq-replayed-from added). Idempotent: what was replayed before is skipped."""
    settings = load_settings()
    console = make_console()
    letters = _selected(settings, topic, since, reason, limit)
    plan = asyncio.run(replay(settings, letters, dry_run=dry_run))
    verb = "would re-publish" if dry_run else "re-published"
    for d in plan.replayed:
        console.print(f"{verb} {d.source_id} ({d.error})")
    by_topic: dict[str, int] = {}
    for d in plan.replayed:
        by_topic[d.source_topic] = by_topic.get(d.source_topic, 0) + 1
    summary = ", ".join(f"{n} to {t}" for t, n in sorted(by_topic.items())) or "nothing"
    console.print(f"{verb} {summary}; {len(plan.already)} replayed before, {len(plan.duplicates)} duplicates "
                  f"of another dead letter, {len(plan.unreplayable)} not replayable (no source or no value)")
    if plan.unreplayable:
        for d in plan.unreplayable:
            console.print(f"  not replayable: {d.source_id or f'dlq {d.dlq_partition}@{d.dlq_offset}'}: {d.reason[:120]}",
                          markup=False)


COMMANDS = (dlq,)
