"""Structured logs: one JSON object per line, and nothing private in them.

Every line carries ``ts``, ``level``, ``logger`` and ``msg``, and inside a request its
``request_id`` (also sent back as ``X-Request-Id``). The access line of a request names the route
*template* (``/v1/recordings/{recording_id}``), never the raw URL: query strings carry call ids,
and a log line is out of reach of any erasure. Nobody logs keys, DEKs, tokens, call ids, owner
e-mails or media; :func:`configure` also drops exception tracebacks' local values (there are none
in Python's default formatting) and keeps each line to one line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["REQUEST_ID", "JsonFormatter", "configure"]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "callvault_request_id", default=None
)
# Attributes a caller may attach with ``extra={...}`` that go into the JSON line.
_FIELDS = ("route", "method", "status", "duration_ms", "principal", "job", "outcome", "counts")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for name in _FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the process; uvicorn's own access log is replaced by ours."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
