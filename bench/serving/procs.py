"""Server processes: start, wait until healthy, meter CPU of the whole process tree, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil


class ThreadMeter:
    """A `cpu` callable for the load loops that also keeps per-thread CPU of the server's main
    process at each call (the loops call it at the window's two edges)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.snapshots: list[dict[int, float]] = []

    def __call__(self) -> float:
        threads = psutil.Process(self.server.proc.pid).threads()
        self.snapshots.append({t.id: t.user_time + t.system_time for t in threads})
        return self.server.cpu_seconds()

    def by_group(self, names: dict[int, str], requests: int) -> dict[str, float]:
        """CPU ms per request by thread group over the last window; `names` maps thread id -> name."""
        before, after = self.snapshots[-2], self.snapshots[-1]
        groups: dict[str, float] = {}
        for tid, cpu in after.items():
            name = names.get(tid, "unnamed")
            group = "anyio_worker_threads" if name.startswith("AnyIO worker") else name
            groups[group] = groups.get(group, 0.0) + cpu - before.get(tid, 0.0)
        ranked = sorted(groups.items(), key=lambda kv: -kv[1])
        return {group: round(1000.0 * cpu / max(requests, 1), 3) for group, cpu in ranked if cpu > 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(**extra: str) -> dict[str, str]:
    """Offline, one tokenizer thread, no inherited AIAAS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIAAS_")}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    return env | extra


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """user + system CPU of every live process in the tree (LitServe runs several)."""
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def suspend(self) -> None:
        """SIGSTOP the tree while another config is measured: idle servers still burn CPU
        (LitServe's workers poll their queues), which would tax whoever is being measured."""
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.suspend()

    def resume(self) -> None:
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.resume()

    def describe(self) -> list[dict]:
        """Each process with its thread count and names (evidence for how a server runs)."""
        out = []
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                names: dict[str, int] = {}
                for tid in (t.id for t in p.threads()):
                    with contextlib.suppress(OSError):
                        comm = Path(f"/proc/{p.pid}/task/{tid}/comm").read_text().strip()
                        names[comm] = names.get(comm, 0) + 1
                out.append(
                    {
                        "pid": p.pid,
                        "cmd": " ".join(p.cmdline()[1:4])[:120],
                        "threads": p.num_threads(),
                        "thread_names": names,
                        "rss_mib": round(p.memory_info().rss / 2**20, 1),
                    }
                )
        return out

    def logs(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)  # its own session: workers get it too
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start(name: str, args: list[str], *, env: dict[str, str], log_dir: Path, port: int) -> Server:
    log = log_dir / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    return Server(name=name, proc=proc, port=port, log=log)


def wait_healthy(server: Server, path: str, *, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.logs()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.base_url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} not healthy after {timeout:.0f} s:\n{server.logs()}")
