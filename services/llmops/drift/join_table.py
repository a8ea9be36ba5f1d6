"""The late join's open entries: in memory for the engine, written through to the drift store.

The join used to live in a faust table, whose changelog is a topic: an in-memory broker that
restarted took every open entry with it (completions consumed and acknowledged, never closed into
an observation), and faust's recovery of a changelog the broker had half lost could wait for ever.
Here an entry is written to the store before the batch it came in is acknowledged, and deleted
once it is closed (its observation stored and handed on), so a process, a broker and a store
restart each leave it where it was: at least once, and the close is idempotent.

Each entry remembers the partition of the source topics it came on. A worker of the join's
consumer group loads the entries of the partitions it is assigned (:meth:`JoinTable.load`), drops
those it lost from memory (:meth:`JoinTable.keep_only`; they stay in the store for the new owner),
and closes only those of partitions it holds (:meth:`JoinTable.owns`).
"""
from __future__ import annotations

import asyncio
import json
import logging

log = logging.getLogger(__name__)


class JoinTable:
    """trace id (bytes) -> entry (the JSON dict of :class:`~llmops.drift.join.JoinEntry`).

    Reads come from memory. :meth:`put` and :meth:`remove` write the store first (in a thread),
    then memory, so memory never holds what the store does not. ``store`` None (unit tests): in
    memory only, over ``entries`` (a dict the caller may read)."""

    def __init__(self, store=None, entries: dict | None = None) -> None:
        self.store = store
        self.entries: dict[bytes, dict] = entries if entries is not None else {}
        self.partitions: dict[bytes, int] = {}
        #: the source partitions this worker holds; None: all of them (no consumer group, or tests)
        self.held: set[int] | None = None if store is None else set()

    # -- reads ------------------------------------------------------------------------------------
    def get(self, key: bytes, default=None):
        return self.entries.get(key, default)

    def __getitem__(self, key: bytes) -> dict:
        return self.entries[key]

    def __contains__(self, key: bytes) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def items(self):
        return self.entries.items()

    def values(self):
        return self.entries.values()

    def owns(self, key: bytes) -> bool:
        """Whether this worker may close ``key``'s entry: its partition is held (an entry set
        without one, by a test, always)."""
        if self.held is None:
            return True
        p = self.partitions.get(key)
        return p is None or p in self.held

    # -- writes -----------------------------------------------------------------------------------
    async def put(self, updates: dict[bytes, tuple[int, dict]]) -> None:
        """Store (partition, entry) for each key, in one transaction, then hold them in memory."""
        if not updates:
            return
        if self.store is not None:
            rows = [(k.decode("utf-8", "surrogateescape"), p, json.dumps(v, sort_keys=True))
                    for k, (p, v) in updates.items()]
            await asyncio.to_thread(self.store.save_join, rows)
        for k, (p, v) in updates.items():
            self.entries[k] = v
            if p >= 0:
                self.partitions[k] = p

    async def remove(self, keys: list[bytes]) -> None:
        """Forget closed entries, in the store, then in memory."""
        if not keys:
            return
        if self.store is not None:
            await asyncio.to_thread(self.store.delete_join, [k.decode("utf-8", "surrogateescape") for k in keys])
        for k in keys:
            self.entries.pop(k, None)
            self.partitions.pop(k, None)

    # -- ownership --------------------------------------------------------------------------------
    def release(self) -> None:
        """A rebalance began: no partition is held until the next assignment says which."""
        if self.held is not None:
            self.held = set()

    async def keep_only(self, partitions: set[int]) -> int:
        """Hold ``partitions`` (this worker's new assignment): drop from memory the entries of the
        partitions that went elsewhere (their new owner reads them from the store), and read those
        of the assigned ones from the store. Returns the entries loaded."""
        if self.store is None:
            return 0
        gone = [k for k, p in self.partitions.items() if p not in partitions]
        for k in gone:
            self.entries.pop(k, None)
            self.partitions.pop(k, None)
        # every assigned partition is read again, the ones held before too: a member that lost its
        # session (a stalled event loop) was out of the group meanwhile, and another may have owned them
        new = set(partitions)
        rows = await asyncio.to_thread(self.store.load_join, new) if new else []
        for k in [k for k, p in self.partitions.items() if p in new]:
            del self.entries[k], self.partitions[k]
        for tid, p, js in rows:
            k = tid.encode("utf-8", "surrogateescape")
            self.entries[k] = json.loads(js)
            self.partitions[k] = p
        self.held = set(partitions)
        if rows or gone:
            log.info("drift join: %d open entries loaded from the store for partitions %s, %d let go",
                     len(rows), ",".join(map(str, sorted(new))) or "-", len(gone))
        return len(rows)
