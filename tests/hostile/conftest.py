"""Fixtures for hostile-input tests (issue #6 items 10 and 11).

`settings` here switches rate limits and quotas off: a fuzzer sends thousands of
requests a minute and must meet the code under test, not the limiter. `live_server`
is a real `aiaas serve` process (so its memory can be measured) sharing its data
directory and database with the test, which runs training workers in-process.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import psutil
import pytest

from tests.conftest import TEST_SECRET

NO_LIMITS = {
    "rate_limit_requests_per_minute": 0,
    "rate_limit_tokens_per_minute": 0,
    "quota_concurrent_jobs": 0,
    "auth_failure_audits_per_minute": 0,
}
TINY = "tiny-bert"
# For tests whose subject does not depend on the SQL backend: run them once, on SQLite.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(settings):
    return settings.model_copy(update=NO_LIMITS)


@dataclass
class Admin:
    org_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_admin(db, name: str = "hostile") -> Admin:
    from aiaas.store import tenancy

    with db.session() as s:
        org, _row, key = tenancy.create_organization(s, name)
        return Admin(org.id, key)


@pytest.fixture
def admin(db) -> Admin:
    return make_admin(db)


@pytest.fixture
def app(settings, db):
    from aiaas.api.app import create_app

    return create_app(settings, db=db, migrate_db=False)


@pytest.fixture
async def client(app, admin) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=admin.headers) as c:
        yield c


@pytest.fixture
def tiny_base(settings) -> Path:
    """A tiny BERT installed as the base model 'tiny-bert' (builds in about a second)."""
    from tests.helpers.tiny_bert import build_tiny_bert

    return build_tiny_bert(settings.base_models_dir / TINY)


# --- a real server, and its memory ---------------------------------------------------------------


class RssSampler:
    """Samples a process's resident set (children included) every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._children: list[psutil.Process] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _rss(self) -> int:
        if self.samples % 20 == 0:  # finding children scans /proc: once a second is enough
            self._children = self.proc.children(recursive=True)
        total = self.proc.memory_info().rss
        for child in self._children:
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._rss())
                self.samples += 1
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def high_water_mark(self) -> int | None:
        """The kernel's own peak RSS of the server process (VmHWM), exact where sampling may miss a spike."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class LiveServer:
    base_url: str
    key: str
    org_id: str
    pid: int
    settings: object  # aiaas.core.settings.Settings for in-process workers and direct store access
    server: object

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def logs(self) -> str:
        return self.server.logs()  # type: ignore[attr-defined]


@pytest.fixture
def live_server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    """`aiaas init` + `aiaas serve` (no job workers) on a free port, with the tiny base model installed."""
    from aiaas.core.settings import Settings
    from tests.e2e.server import base_env, init, start_server
    from tests.helpers.tiny_bert import build_tiny_bert

    data_dir = tmp_path / "data"
    extra = {f"AIAAS_{k.upper()}": str(v) for k, v in NO_LIMITS.items()}
    env = base_env(data_dir, database_url, AIAAS_SECRET_KEY=TEST_SECRET, **extra)
    key = init(env)
    settings = Settings(env="production", data_dir=data_dir, database_url=database_url, secret_key=TEST_SECRET,
                        job_workers=0, **NO_LIMITS)
    build_tiny_bert(settings.base_models_dir / TINY)
    server = start_server(env, tmp_path)
    try:
        me = httpx.get(server.base_url + "/v1/organizations/me", headers={"Authorization": f"Bearer {key}"},
                       timeout=30)
        me.raise_for_status()
        yield LiveServer(server.base_url, key, me.json()["id"], server.proc.pid, settings, server)
    finally:
        _stop(server)


def _stop(server) -> None:
    """SIGINT, then SIGKILL after 5 s: a request stuck in a worker thread must not hold the suite up."""
    import signal
    import subprocess

    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
    try:
        server.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)
