"""Protobuf envelopes for Kafka: the payload is the serialized message, headers carry its type
name and the W3C ``traceparent``. Decoding checks both and says exactly what is wrong."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from llmops.common.errors import InvalidArgument

TYPE_HEADER = "llmops-type"
TRACEPARENT_HEADER = "traceparent"
CONTENT_TYPE_HEADER = "content-type"
CONTENT_TYPE = b"application/x-protobuf"

M = TypeVar("M", bound=Message)
Headers = Sequence[tuple[str, bytes]]


class UndecodableMessage(InvalidArgument):
    """A consumed message that cannot be turned into its event. Its message goes on the DLQ as the reason."""


@dataclass(frozen=True)
class Record:
    """A consumed Kafka record, independent of the client library that read it."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int = 0

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers or ():
            if k == name:
                return v
        return None


def traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace_id, parent span id) of a W3C traceparent, or None when it is malformed."""
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    if parts[1] == "0" * 32 or parts[2] == "0" * 16:
        return None
    return parts[1].lower(), parts[2].lower()


def encode(message: Message, traceparent_value: str = "") -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = [
        (CONTENT_TYPE_HEADER, CONTENT_TYPE),
        (TYPE_HEADER, message.DESCRIPTOR.full_name.encode()),
    ]
    if traceparent_value:
        headers.append((TRACEPARENT_HEADER, traceparent_value.encode()))
    return message.SerializeToString(), headers


def decode(record: Record, cls: type[M]) -> M:
    """Parse ``record.value`` as ``cls``; raise :class:`UndecodableMessage` with the reason."""
    if record.value is None:
        raise UndecodableMessage("empty value (tombstone) where a protobuf payload was expected")
    declared = record.header(TYPE_HEADER)
    expected = cls.DESCRIPTOR.full_name
    if declared is not None and declared.decode(errors="replace") != expected:
        raise UndecodableMessage(
            f"type header says {declared.decode(errors='replace')!r}, topic carries {expected!r}"
        )
    msg = cls()
    try:
        msg.ParseFromString(record.value)
    except _PbDecodeError as exc:
        raise UndecodableMessage(f"not a valid {expected} protobuf: {exc}") from None
    return msg
