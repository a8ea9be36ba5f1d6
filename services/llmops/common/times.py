"""Timestamps as stores keep them: integer microseconds since the epoch, and protobuf
``Timestamp`` conversions."""
from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp


#: the last second a request's timestamp may name: 9999-12-31T23:59:59Z, the end of protobuf's
#: Timestamp range (microseconds of it still fit in a 64-bit integer column)
MAX_TS_SECONDS = 253_402_300_799


def request_ts_us(request, field: str) -> int:
    """``request.<field>`` (a Timestamp) in microseconds, 0 when unset; INVALID_ARGUMENT outside
    1970-01-01 .. 9999-12-31 or with nanos out of range (a store cannot compare what does not fit)."""
    from llmops.common.errors import InvalidArgument

    if not request.HasField(field):
        return 0
    ts = getattr(request, field)
    if not 0 <= ts.seconds <= MAX_TS_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field} must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z "
                              f"(seconds 0 to {MAX_TS_SECONDS}, nanos 0 to 999999999), got seconds={ts.seconds} "
                              f"nanos={ts.nanos}")
    return ts_to_us(ts)


def ts_to_us(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def us_to_ts(us: int) -> Timestamp:
    out = Timestamp()
    out.seconds, rem = divmod(int(us), 1_000_000)
    out.nanos = rem * 1000
    return out


def now_us() -> int:
    return time.time_ns() // 1000
