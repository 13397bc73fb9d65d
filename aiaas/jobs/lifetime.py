"""Child processes end with their parent: the parent-death signal (Linux) plus a watcher elsewhere.

A parent that starts a long-lived child (`aiaas serve` its training workers, `aiaas quickstart` its
server) passes its pid in AIAAS_PARENT_PID (`child_env`); the child calls `die_with_parent()` first
thing. On Linux the kernel sends the child SIGTERM the moment the parent dies, however it dies
(SIGKILL included): prctl(PR_SET_PDEATHSIG). Elsewhere, and as a second line, a daemon thread polls
getppid() and sends the same signal. SIGTERM, not SIGKILL: a training worker then stops at the next
step and releases its lease, so the job resumes elsewhere at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

PARENT_ENV = "AIAAS_PARENT_PID"
PR_SET_PDEATHSIG = 1
POLL_S = 0.5


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: ours) for a child that must end with this process."""
    return dict(os.environ if env is None else env) | {PARENT_ENV: str(os.getpid())}


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Arrange for `sig` when the parent named in AIAAS_PARENT_PID dies; True when armed.

    AIAAS_PARENT_PID=ppid names whoever started us (`make demo` sets it so).
    """
    raw = os.environ.get(PARENT_ENV)
    if not raw:
        return False
    parent = os.getppid() if raw == "ppid" else int(raw)
    os.environ.pop(PARENT_ENV, None)  # our own children get their own parent's pid, not this one
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %s", ctypes.get_errno())
        except OSError:  # pragma: no cover - no libc to load
            log.warning("no libc: the parent-death signal is not armed; polling instead")
    # The parent may have died before prctl ran (the signal is then never sent), and other systems
    # have no prctl: watch the parent id as well.
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
        return True

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(POLL_S)
        log.warning("parent %s is gone; stopping", parent)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    return True
