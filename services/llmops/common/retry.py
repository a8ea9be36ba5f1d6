"""Transient versus poison: which failures may pass (retry with backoff while the batch is held)
and which are deterministic (dead-letter the record with its reason).

A failure is transient when retrying the same input later can succeed: the store or the broker is
away or busy (connection refused or reset, a timeout, ``database is locked``, a PostgreSQL
restart, a Kafka retriable error, ``UNAVAILABLE``). Everything else (undecodable bytes, a value
the schema refuses, a bug that fails the same way every time) is deterministic: retrying cannot
help, so the record goes to the DLQ and the consumer goes on.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from llmops.common.errors import DeadlineExceeded, RateLimited, Unavailable

#: message fragments of DB-API errors that mean "the database is away or busy", not "this row is bad"
_TRANSIENT_DB_TEXT = (
    "database is locked", "database is busy", "could not connect", "connection refused", "connection reset",
    "server closed the connection", "terminating connection", "the database system is starting up",
    "the database system is shutting down", "connection timed out", "timeout expired", "no route to host",
    "connection is closed", "connection already closed", "ssl syscall error", "broken pipe",
    "cannot connect now", "too many connections", "disk i/o error",
)


class Transient(Exception):
    """Raised by a consumer for a failure that may pass: the batch is held and retried."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (Transient, Unavailable, RateLimited, DeadlineExceeded, ConnectionError, TimeoutError,
                        asyncio.TimeoutError)):
        return True
    try:
        from aiokafka.errors import KafkaError
    except ImportError:  # pragma: no cover - aiokafka is a dependency
        KafkaError = ()   # type: ignore[assignment]
    if KafkaError and isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or type(exc).__name__ in (
            "KafkaConnectionError", "KafkaTimeoutError", "RequestTimedOutError", "NodeNotReadyError",
            "NotLeaderForPartitionError", "LeaderNotAvailableError", "UnknownTopicOrPartitionError")
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover
        sa_exc = None
    if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        # PostgreSQL's SQLSTATE: connection (08), resources (53), operator intervention such as a
        # restart (57), serialization failure, deadlock, lock wait over lock_timeout
        code = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
        if code[:2] in ("08", "53", "57") or code in ("40001", "40P01", "55P03"):
            return True
        text = str(exc.orig if exc.orig is not None else exc).lower()
        return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) and (
            any(t in text for t in _TRANSIENT_DB_TEXT) or isinstance(exc, sa_exc.InterfaceError))
    if sa_exc is not None and isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    if isinstance(exc, OSError):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


@dataclass
class Backoff:
    """Exponential backoff with full jitter: ``first_s``, doubling, capped at ``max_s``."""
    first_s: float = 0.2
    max_s: float = 10.0
    attempt: int = 0

    def next_delay(self) -> float:
        cap = min(self.max_s, self.first_s * (2 ** self.attempt))
        self.attempt += 1
        return random.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0
