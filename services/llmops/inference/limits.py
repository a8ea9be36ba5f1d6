"""What one generation request may carry, on both doors (gRPC ``Generate``/``GenerateStream`` and
the OpenAI-compatible gateway): every field that ends up in the request's ``CompletionEvent`` is
bounded, so that the event always fits in one Kafka message (``LLMOPS_KAFKA_MAX_MESSAGE_BYTES``,
1 MiB by default) and the trace always gets its completion. A request over a limit is refused
with INVALID_ARGUMENT (400 on the gateway) that names the field and the limit, before any work.

The event carries the text twice (the question, and the rendered prompt with the history and the
retrieved contexts), so the text may take a quarter of a message and the metadata a sixteenth; the
rest is for the contexts, the answer and the other fields. The README lists the limits.
"""
from __future__ import annotations

from dataclasses import dataclass

from llmops.common.errors import InvalidArgument

DEFAULT_MESSAGE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class InputLimits:
    max_text_bytes: int = DEFAULT_MESSAGE_BYTES // 4   # `prompt`, or every message's content together (UTF-8)
    max_messages: int = 256
    max_metadata_entries: int = 64
    max_metadata_key_chars: int = 128
    max_metadata_value_chars: int = 4096
    max_metadata_bytes: int = DEFAULT_MESSAGE_BYTES // 16   # every key and value together (UTF-8)
    max_id_chars: int = 256   # session_id, user_id, prompt_template, model, retrieval.collection

    @classmethod
    def for_message_bytes(cls, message_bytes: int) -> InputLimits:
        """The limits for events of at most ``message_bytes`` (LLMOPS_KAFKA_MAX_MESSAGE_BYTES)."""
        return cls(max_text_bytes=message_bytes // 4, max_metadata_bytes=message_bytes // 16)


DEFAULT_LIMITS = InputLimits()


class LimitExceeded(InvalidArgument):
    """A field over its limit: INVALID_ARGUMENT on gRPC, 400 with ``param`` on the gateway."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def utf8_len(s: str) -> int:
    return len(s.encode("utf-8", errors="surrogatepass"))


def check_text(field: str, total_bytes: int, limits: InputLimits) -> None:
    """The request's text (``prompt``, or all of ``messages`` together)."""
    if total_bytes > limits.max_text_bytes:
        what = "of content together " if field == "messages" else ""
        raise LimitExceeded(f"`{field}` holds {total_bytes} bytes {what}(UTF-8); at most {limits.max_text_bytes} "
                            "bytes (a quarter of LLMOPS_KAFKA_MAX_MESSAGE_BYTES)", field)


def check_message_count(field: str, n: int, limits: InputLimits) -> None:
    if n > limits.max_messages:
        raise LimitExceeded(f"`{field}` holds {n} messages; at most {limits.max_messages}", field)


def check_metadata(metadata, limits: InputLimits, field: str = "metadata", dotted: bool = False) -> None:
    """A string map (``metadata``): entries, key and value length, bytes together. ``dotted``:
    name an entry ``metadata.key`` (the gateway's JSON) rather than ``metadata['key']``."""
    if len(metadata) > limits.max_metadata_entries:
        raise LimitExceeded(f"`{field}` has {len(metadata)} entries; at most {limits.max_metadata_entries}", field)
    total = 0
    for k, v in metadata.items():
        where = f"{field}.{k[:64]}" if dotted else f"{field}[{k[:64]!r}]"
        if not k or len(k) > limits.max_metadata_key_chars:
            raise LimitExceeded(f"`{field}` keys must be 1 to {limits.max_metadata_key_chars} characters, "
                                f"got one of {len(k)}", field)
        if len(v) > limits.max_metadata_value_chars:
            raise LimitExceeded(f"`{where}` is {len(v)} characters; at most {limits.max_metadata_value_chars} "
                                "characters", where)
        total += utf8_len(k) + utf8_len(v)
    if total > limits.max_metadata_bytes:
        raise LimitExceeded(f"`{field}` holds {total} bytes (keys and values, UTF-8); at most "
                            f"{limits.max_metadata_bytes} bytes", field)


def check_id(field: str, value: str, limits: InputLimits) -> None:
    if len(value) > limits.max_id_chars:
        raise LimitExceeded(f"`{field}` is {len(value)} characters; at most {limits.max_id_chars} characters", field)


def check_generate_request(req, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """A gRPC ``GenerateRequest`` within the limits, or INVALID_ARGUMENT naming the field and the limit."""
    check_text("prompt", utf8_len(req.prompt), limits)
    check_message_count("messages", len(req.messages), limits)
    check_text("messages", sum(utf8_len(m.content) for m in req.messages), limits)
    for name in ("session_id", "user_id", "prompt_template", "model"):
        check_id(name, getattr(req, name), limits)
    check_id("retrieval.collection", req.retrieval.collection, limits)   # a span attribute of the request
    check_metadata(req.metadata, limits)
