"""How `controparte serve` and its worker processes log: to stderr, from the level of
the setting `log_level`, in the format of `log_format` (`text`: one line a record;
`json`: one JSON object a line), every time in UTC (ISO 8601, `Z`). uvicorn's loggers
go the same way (it configures none of its own)."""

from __future__ import annotations

import json
import logging
import time

from controparte.settings import Settings

TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _UtcText(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802, ARG002 (the ISO 8601 form, always)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


class _Json(_UtcText):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(settings: Settings) -> None:
    """Send every record from `settings.log_level` up to stderr, formatted as
    `settings.log_format` says (replacing any handler the root logger had)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Json() if settings.log_format == "json" else _UtcText())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
