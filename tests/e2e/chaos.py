"""Shared parts of the chaos tests (tests/e2e/test_chaos_*.py): a data dir with a tiny base model and a
registered tiny classifier, process-tree snapshots, and waiting for processes to go."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from aiaas.core.settings import Settings
from aiaas.services import authn
from aiaas.store.db import Database
from tests.e2e.server import base_env, init
from tests.helpers.deployed import export_tiny_classifier, register
from tests.helpers.tiny_bert import build_tiny_bert

MODEL = "ft:tiny-bert:default:chaos:ftjob-chaos"
FAST_LEASES = {"AIAAS_LEASE_SECONDS": "3", "AIAAS_HEARTBEAT_SECONDS": "0.5", "AIAAS_POLL_SECONDS": "0.2"}


@dataclass
class Stack:
    env: dict[str, str]
    key: str
    data: Path
    tmp: Path
    database_url: str

    def db(self) -> Database:
        return Database(Settings(data_dir=self.data, database_url=self.database_url).sqlalchemy_url)


def make_stack(tmp: Path, database_url: str | None, *, with_model: bool = False, **extra_env: str) -> Stack:
    data = tmp / "data"
    build_tiny_bert(data / "base_models" / "tiny-bert")
    env = base_env(data, database_url, **(FAST_LEASES | extra_env))
    key = init(env)
    settings = Settings(data_dir=data, database_url=database_url)
    if with_model:
        db = Database(settings.sqlalchemy_url)
        with db.session() as s:
            org_id = authn.authenticate(s, key).org_id
        register(settings, db, org_id, export_tiny_classifier(tmp / "model"), model_id=MODEL,
                 task="single_label_classification", labels=["negative", "positive"])
        db.dispose()
    return Stack(env=env, key=key, data=data, tmp=tmp, database_url=settings.sqlalchemy_url)


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live process under `pid`."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for c in children:
        try:
            out[c.pid] = " ".join(c.cmdline())
        except psutil.Error:
            pass
    return out


def alive(pids) -> list[int]:  # type: ignore[no-untyped-def]
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            pass
    return left


def wait_gone(pids, timeout: float) -> tuple[list[int], float]:  # type: ignore[no-untyped-def]
    """Wait until none of `pids` runs; returns (those still running, seconds waited)."""
    t0 = time.monotonic()
    left = alive(pids)
    while left and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
        left = alive(pids)
    return left, time.monotonic() - t0


def wait_for(pred, timeout: float, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return pred()
