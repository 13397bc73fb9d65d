"""`aiaas serve` started by fork from a process that has already imported it, for a test that restarts the
server many times (chaos R2: 21 starts per backend).

Most of a server's start is importing (the CLI, FastAPI, SQLAlchemy, the app: about 1.5 s of CPU). The zygote
imports those once, in the test's environment, and forks one child per start: the child runs the very
`aiaas serve` entry point (`app(["serve", ...])`) in a new session with its own log file, so killing it with
SIGKILL is the same cut as before. The zygote also imports what a server imports on its first job creation
(aiaas.training.families, ~0.6 s on 2 loaded cores): chaos R2 kills each server 0.05-0.8 s into its traffic, and
a fresh server's first job creation (0.6-1.2 s, against ~0.05 s warm) outlasted that window at all 20 kills of
one loaded run, which then acked no job and failed. The zygote opens no database, socket or thread before it
forks. It lives as long as its stdin: when the test (or the test process) goes, it kills the servers it started
and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ZYGOTE = r"""
import os, signal, sys
import aiaas.cli.main as cli
import aiaas.api.app, aiaas.cli.serve, uvicorn  # noqa: F401 - what `serve` imports when it runs
import aiaas.training.families  # noqa: F401 - what the first job creation imports (~0.6 s, see below)

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel: no zombies
started = []
for line in sys.stdin:
    log, *args = line.rstrip("\n").split("\t")
    pid = os.fork()
    if pid == 0:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = 0
        try:
            cli.app(args=args, prog_name="aiaas")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    started.append(pid)
    print(pid, flush=True)
for pid in started:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


class Forked:
    """The part of subprocess.Popen that tests use, for a process the zygote forked (not our child: its exit
    status is not ours to read; `returncode` is -1 once it has gone)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                if psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE:
                    return None
            except psutil.NoSuchProcess:
                pass
            self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def spawn(self, args: list[str], log: Path) -> Forked:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert all("\t" not in a and "\n" not in a for a in [str(log), *args])
        self.proc.stdin.write("\t".join([str(log), *args]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote exited with {self.proc.wait()}")
        return Forked(int(line))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
