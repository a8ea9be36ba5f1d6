"""Timestamps as stores keep them: integer microseconds since the epoch, and protobuf
``Timestamp`` conversions."""
from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp


def ts_to_us(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def us_to_ts(us: int) -> Timestamp:
    out = Timestamp()
    out.seconds, rem = divmod(int(us), 1_000_000)
    out.nanos = rem * 1000
    return out


def now_us() -> int:
    return time.time_ns() // 1000
