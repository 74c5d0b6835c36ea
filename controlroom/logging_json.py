"""One JSON object per log line, carrying the request id of the request being served."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from controlroom.masking import mask_text
from controlroom.request_id import get_request_id

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or get_request_id() or _from_request(record),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in payload and not key.startswith("_") and key != "request":
                payload[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        # A secret this process resolved never reaches the log, whichever field carried it.
        return mask_text(None, json.dumps(payload, default=str))


def _from_request(record: logging.LogRecord) -> str | None:
    # django.request logs 4xx/5xx after the middleware chain returned (the context variable is
    # reset by then) but passes the request along.
    return getattr(getattr(record, "request", None), "request_id", None)
