"""The wall clock, in one place: whole seconds since the epoch, the unit of every stored timestamp.

Every caller goes through `now()`, which reads `wall` when called, so a test that needs
another time sets it once for the whole process:
`monkeypatch.setattr(aiaas.core.clock, "wall", lambda: 1_700_000_000.0)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

wall: Callable[[], float] = time.time


def now() -> int:
    return int(wall())
