"""Run `aiaas init` and `aiaas serve` as real processes on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.prefork import Forked, Zygote

AIAAS = [sys.executable, "-m", "aiaas.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIAAS_")}
    env |= {
        "AIAAS_DATA_DIR": str(data_dir),
        "AIAAS_ENV": "production",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    if database_url:
        env["AIAAS_DATABASE_URL"] = database_url
    env |= extra
    return env


def init(env: dict[str, str]) -> str:
    """Run `aiaas init`; return the admin key it printed."""
    out = subprocess.run(AIAAS + ["init"], env=env, capture_output=True, text=True, timeout=120, check=True)
    keys = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("aiaas_sk_")]
    assert len(keys) == 1, out.stdout + out.stderr
    return keys[0]


@dataclass
class Server:
    proc: subprocess.Popen | Forked
    base_url: str
    log: Path
    extra: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        for p in [self.proc, *self.extra]:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in [self.proc, *self.extra]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_server(env: dict[str, str], log_dir: Path, *, job_workers: int = 0, timeout: float = 60.0,
                 workers: int = 1, zygote: Zygote | None = None) -> Server:
    """`aiaas serve` on a free port, ready; forked by `zygote` when given (tests/e2e/prefork.py), which must
    have been started with the same `env`."""
    port = free_port()
    log = log_dir / f"server-{port}.log"
    args = ["serve", "--port", str(port), "--job-workers", str(job_workers)]
    args += ["--workers", str(workers)] if workers != 1 else []
    proc: subprocess.Popen | Forked
    if zygote is not None:
        proc = zygote.spawn(args, log)
    else:
        fh = open(log, "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(AIAAS + args, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc=proc, base_url=f"http://127.0.0.1:{port}", log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.base_url + "/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # a restart is on the critical path of every e2e test (20 of them in chaos R2)
    server.stop()
    raise RuntimeError(f"server did not become ready:\n{server.logs()}")
