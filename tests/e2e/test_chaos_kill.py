"""Chaos R2 on real processes: kill -9 the API at random points of uploads, job creations and deploys, 20 times.

After every restart: each request answered 2xx before the kill is readable (files byte for byte), and
nothing is half visible (every listed file's content reads back whole, every listed job's training
file exists, every listed deployment's model exists)."""

from __future__ import annotations

import hashlib
import random
import threading
import time

import httpx
import pytest

from tests.e2e.chaos import MODEL, make_stack
from tests.e2e.prefork import Zygote
from tests.e2e.server import start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TRIALS = 20
SEED = 20261207


class Traffic:
    """Three clients in parallel (upload, job create, deploy) until the server dies; records what was acked."""

    def __init__(self, base_url: str, key: str, rng: random.Random, training_file: str | None) -> None:
        self.base_url, self.key, self.rng = base_url, key, rng
        self.training_file = training_file
        self.files: dict[str, str] = {}  # id -> sha256 of what was sent
        self.jobs: set[str] = set()
        self.deployments: dict[str, str] = {}
        self.in_flight: dict[str, int] = {"upload": 0, "job": 0, "deploy": 0}
        self.errors: list[str] = []
        self.killed = threading.Event()  # set by the test once the server is dead
        self.threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True)
                        for kind in ("upload", "job", "deploy")]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(30)

    def _loop(self, kind: str) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30) as c:
            n = 0
            while True:
                n += 1
                try:
                    self.in_flight[kind] = 1
                    ok = getattr(self, "_" + kind)(c, n)
                    self.in_flight[kind] = 0
                except httpx.TransportError:
                    return  # the server was killed; whatever was in flight is unknown, not acked
                if not ok:
                    return

    def _upload(self, c: httpx.Client, n: int) -> bool:
        rows = self.rng.randint(50, 4000)
        body = "text,label\n" + "".join(f"message {n}-{i} about order {self.rng.random()},{'ab'[i % 2]}\n"
                                        for i in range(rows))
        data = body.encode()
        r = c.post("/v1/files", files={"file": (f"t{n}.csv", data, "text/csv")}, data={"purpose": "fine-tune"})
        if r.status_code >= 300:
            self.errors.append(f"upload {r.status_code} {r.text[:200]}")
            return False
        self.files[r.json()["id"]] = hashlib.sha256(data).hexdigest()
        self.training_file = self.training_file or r.json()["id"]
        return True

    def _job(self, c: httpx.Client, n: int) -> bool:
        if self.training_file is None:  # no upload acked yet: nothing to train on, nothing sent
            # Until one is, this thread sends nothing, so no TransportError would tell it the server died: it
            # stops when the test says so (it used to spin until join's 30 s timeout, most of R2's time).
            return not self.killed.wait(0.05)
        r = c.post("/v1/fine_tuning/jobs", json={"model": "tiny-bert", "training_file": self.training_file})
        if r.status_code >= 300:
            self.errors.append(f"job {r.status_code} {r.text[:200]}")
            return False
        self.jobs.add(r.json()["id"])
        return True

    def _deploy(self, c: httpx.Client, n: int) -> bool:
        name = f"d{self.rng.randrange(10**9)}"
        r = c.post("/v1/deployments", json={"name": name, "model": MODEL, "min_replicas": 0})
        if r.status_code >= 300:
            self.errors.append(f"deploy {r.status_code} {r.text[:200]}")
            return False
        self.deployments[name] = MODEL
        return True


def _all(c: httpx.Client, path: str) -> list[dict]:
    out, after = [], None
    while True:
        r = c.get(path, params={"limit": 100, **({"after": after} if after else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["data"]
        if not body.get("has_more") or not body["data"]:
            return out
        after = body["data"][-1]["id"]


def _check(base_url: str, key: str, files: dict, jobs: set, deployments: dict, verified: set) -> dict[str, int]:
    """Everything acked reads back, and everything listed is whole; `verified` skips what an earlier check
    already read in full (objects are immutable here)."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for fid, sha in files.items():  # every acked upload reads back byte for byte
            if fid not in verified:
                r = c.get(f"/v1/files/{fid}/content")
                assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha, (fid, r.status_code)
                verified.add(fid)
        for jid in jobs - verified:
            assert c.get(f"/v1/fine_tuning/jobs/{jid}").status_code == 200, jid
            verified.add(jid)
        for name, model in deployments.items():
            if name not in verified:
                r = c.get(f"/v1/deployments/{name}")
                assert r.status_code == 200 and r.json()["model"] == model, (name, r.text)
                verified.add(name)
        # Nothing half visible: whatever is listed is whole.
        listed_files = _all(c, "/v1/files")
        for f in listed_files:
            if f["id"] not in verified:
                r = c.get(f"/v1/files/{f['id']}/content")
                assert r.status_code == 200 and len(r.content) == f["bytes"], (f, r.status_code)
                verified.add(f["id"])
        listed_jobs = _all(c, "/v1/fine_tuning/jobs")
        for j in listed_jobs:
            assert j["training_file"] in verified or c.get(f"/v1/files/{j['training_file']}").status_code == 200, j
        listed_deps = _all(c, "/v1/deployments")
        for d in {d["model"] for d in listed_deps}:
            assert c.get(f"/v1/models/{d}").status_code == 200, d
    return {"files": len(listed_files), "jobs": len(listed_jobs), "deployments": len(listed_deps)}


def test_r2_kill9_during_writes_loses_nothing_acked_and_shows_nothing_half(tmp_path, database_url):
    stack = make_stack(tmp_path, database_url, with_model=True, AIAAS_QUOTA_CONCURRENT_JOBS="0",
                       AIAAS_QUOTA_DEPLOYMENTS="0", AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE="0")
    rng = random.Random(SEED)
    files: dict[str, str] = {}
    jobs: set[str] = set()
    deployments: dict[str, str] = {}
    killed_during = {"upload": 0, "job": 0, "deploy": 0}
    verified: set[str] = set()
    zygote = Zygote(stack.env)  # 21 starts: each a fork of a process that has imported `aiaas serve` once
    server = start_server(stack.env, tmp_path, zygote=zygote)
    try:
        for _trial in range(TRIALS):
            traffic = Traffic(server.base_url, stack.key, rng, next(iter(files), None))
            traffic.start()
            time.sleep(rng.uniform(0.05, 0.8))
            server.proc.kill()  # SIGKILL: no shutdown code runs
            server.proc.wait()
            traffic.killed.set()
            traffic.join()
            assert not any(t.is_alive() for t in traffic.threads), "a client thread outlived the server"
            assert not traffic.errors, traffic.errors
            for kind, busy in traffic.in_flight.items():
                killed_during[kind] += busy
            files |= traffic.files
            jobs |= traffic.jobs
            deployments |= traffic.deployments
            server = start_server(stack.env, tmp_path, zygote=zygote)
            counts = _check(server.base_url, stack.key, files, jobs, deployments, verified)
    finally:
        server.stop()
        zygote.close()
    print(f"R2: {TRIALS} kills; requests in flight at the kill: {killed_during}; acked and read back: "
          f"{len(files)} files, {len(jobs)} jobs, {len(deployments)} deployments; listed {counts}")
    assert files and jobs and deployments
    assert all(killed_during.values()), killed_during  # every kind of write was cut at least once
