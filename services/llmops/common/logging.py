"""Structured logs that carry the current trace id.

The trace id lives in a ``contextvars.ContextVar`` so that every log line written while a request
(or a consumed event) is handled names it, in text or in JSON.
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from contextlib import contextmanager

current_trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("llmops_trace_id", default="")


@contextmanager
def trace_context(trace_id: str):
    token = current_trace_id.set(trace_id)
    try:
        yield
    finally:
        current_trace_id.reset(token)


class _TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "trace_id", ""):
            record.trace_id = current_trace_id.get()
        return True


class JsonFormatter(logging.Formatter):
    _skip = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "trace_id", "service"}

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "trace_id", ""):
            out["trace_id"] = record.trace_id
        for k, v in vars(record).items():
            if k not in self._skip and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-5s " + service + " %(name)s%(trace)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        tid = getattr(record, "trace_id", "")
        record.trace = f" [trace={tid}]" if tid else ""
        return super().format(record)


def configure_logging(service: str, level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    handler.addFilter(_TraceIdFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # chatty libraries: keep their warnings, not their chatter
    for name in ("aiokafka", "faust", "mode", "httpx", "urllib3", "sentence_transformers", "lancedb"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
