"""Kafka envelopes: the payload is the serialized message, headers carry its type name, its
encoding and the W3C ``traceparent``. Decoding checks all three and says exactly what is wrong.

The platform writes protobuf (``content-type: application/x-protobuf``). The input topics
(documents, spans, completions, scores, feedback) also take protobuf's JSON mapping from any
producer that sends ``content-type: application/json``; a message without a content type is
protobuf, and one without ``llmops-type`` is typed by its topic."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from llmops.common.errors import InvalidArgument

TYPE_HEADER = "llmops-type"
TRACEPARENT_HEADER = "traceparent"
CONTENT_TYPE_HEADER = "content-type"
CONTENT_TYPE = b"application/x-protobuf"
PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPE = "application/json"

#: the payloads of the input topics (``topics.INPUT_TOPICS``): these also come as JSON
JSON_PAYLOADS = frozenset({
    "llmops.v1.DocumentEvent", "llmops.v1.SpanEvent", "llmops.v1.CompletionEvent",
    "llmops.v1.ScoreEvent", "llmops.v1.FeedbackEvent",
})

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
        """The first header called ``name`` (header names are case-insensitive, as in HTTP)."""
        name = name.lower()
        for k, v in self.headers or ():
            if k.lower() == name:
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


def _show(raw: bytes, limit: int = 64) -> str:
    return repr(raw.decode("utf-8", errors="replace")[:limit])


def content_type(record: Record) -> tuple[str, str]:
    """(``"protobuf"`` or ``"json"``, charset): how the value is encoded, from its ``content-type``
    header (none means protobuf). A media type the platform does not read is :class:`UndecodableMessage`."""
    raw = record.header(CONTENT_TYPE_HEADER)
    if raw is None:
        return "protobuf", ""
    media, *params = raw.decode("utf-8", errors="replace").split(";")
    media = media.strip().lower()
    charset = ""
    for p in params:
        name, _, value = p.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"')
    if media in PROTOBUF_TYPES:
        return "protobuf", charset
    if media == JSON_TYPE:
        return "json", charset
    raise UndecodableMessage(f"content-type {_show(raw)} is not accepted; send application/x-protobuf "
                             f"or application/json")


def decode(record: Record, cls: type[M]) -> M:
    """Parse ``record.value`` as ``cls``, in protobuf or (on the input topics) protobuf's JSON
    mapping, as its ``content-type`` says; raise :class:`UndecodableMessage` with the reason."""
    expected = cls.DESCRIPTOR.full_name
    if record.value is None:
        raise UndecodableMessage(f"empty value (tombstone) where a {expected} was expected")
    declared = record.header(TYPE_HEADER)
    if declared is not None and declared.decode(errors="replace").strip() != expected:
        raise UndecodableMessage(f"type header says {_show(declared)}, topic carries {expected!r}")
    kind, charset = content_type(record)
    if kind == "json":
        if expected not in JSON_PAYLOADS:
            raise UndecodableMessage(f"JSON is not accepted on this topic; send {expected} as application/x-protobuf")
        if charset and charset.lower() not in ("utf-8", "utf8"):
            raise UndecodableMessage(f"charset {charset!r} is not accepted; JSON must be UTF-8")
        return _from_json(record.value, cls)
    msg = cls()
    try:
        msg.ParseFromString(record.value)
    except _PbDecodeError as exc:
        hint = ""
        if expected in JSON_PAYLOADS and record.value.lstrip()[:1] in (b"{", b"["):
            hint = " (it looks like JSON: send it with the header content-type: application/json)"
        raise UndecodableMessage(f"not a valid {expected} protobuf: {exc}{hint}") from None
    return msg


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise UndecodableMessage(f"duplicate key {k!r} in a JSON object")
        out[k] = v
    return out


def _from_json(value: bytes, cls: type[M]) -> M:
    expected = cls.DESCRIPTOR.full_name
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UndecodableMessage(f"JSON {expected} is not valid UTF-8: byte {value[exc.start:exc.start + 1]!r} "
                                 f"at position {exc.start}") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise UndecodableMessage(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise UndecodableMessage(f"JSON value is {_json_kind(obj)}, not an object; a {expected} is a JSON object")
    msg = cls()
    try:
        json_format.ParseDict(obj, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise UndecodableMessage(f"JSON {expected} does not match protobuf's JSON mapping: "
                                 f"{_parse_error(exc, cls.DESCRIPTOR.name)}") from None
    return msg


def _json_kind(obj) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, (int, float)):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    return "an array"


_UNKNOWN_FIELD = re.compile(r'Message type "([^"]+)" has no field named "([^"]*)" at "([^"]*)"\.?\s*'
                            r'(?:Available Fields\(except extensions\): "\[[^\]]*\]")?\.?')


def _parse_error(exc: json_format.ParseError, top: str) -> str:
    """json_format's message, with an unknown field said plainly (and without the list of every
    field of the message that json_format appends)."""
    def unknown(m: re.Match) -> str:
        return f'unknown field "{m[2]}" in {m[1]}' + (f" (at {m[3]})" if m[3] != top else "")

    return " ".join(_UNKNOWN_FIELD.sub(unknown, str(exc)).split()).rstrip(".")
