"""The process's shutdown flag: set once when the server is asked to stop (SIGTERM), read by whatever must end
early rather than hold the shutdown up (open event streams). It lives in core so the entrypoint that catches the
signal and the routes that react to it need not import each other."""

from __future__ import annotations

import threading

_SHUTTING_DOWN = threading.Event()


def begin_shutdown() -> None:
    """The server is stopping: every open events stream sends a final event and ends within one poll."""
    _SHUTTING_DOWN.set()


def shutting_down() -> bool:
    return _SHUTTING_DOWN.is_set()
