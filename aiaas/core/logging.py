"""Logging helpers for entrypoints (the CLI). Library modules only call getLogger(__name__).

`AIAAS_LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message, and the fields
a record carries in `extra`, such as the access line's); `text` (the default) the usual one-liners.
The access line (logger `aiaas.access`, one per HTTP request, written by the edge middleware) carries
ids, the route template, status, latency and byte counts: never bodies, texts, labels or keys.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

ACCESS_LOGGER = "aiaas.access"
# Attributes every LogRecord has; anything else on a record came from `extra` and is written out.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_format(fmt: str | None = None) -> str:
    fmt = (fmt or os.environ.get("AIAAS_LOG_FORMAT") or "text").strip().lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"AIAAS_LOG_FORMAT must be 'text' or 'json', got {fmt!r}")
    return fmt


def configure_logging(level: str = "INFO", fmt: str | None = None) -> None:
    """Configure the root logger once per process. In JSON mode access lines are always written
    (they are what JSON logs are for), whatever the level of the rest."""
    fmt = log_format(fmt)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    if fmt == "json":
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)


def uvicorn_log_config(fmt: str | None = None) -> dict[str, Any]:
    """A `log_config` for uvicorn.run (applied in every worker process too): uvicorn's own lines in the
    same format, and its access log off in JSON mode (the edge middleware writes a richer one)."""
    json_mode = log_format(fmt) == "json"
    formatter = {"()": JsonFormatter} if json_mode else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": [] if json_mode else ["default"], "level": "INFO",
                               "propagate": False},
            ACCESS_LOGGER: {"level": "INFO"} if json_mode else {},
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
