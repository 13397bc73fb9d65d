"""Authentication before bodies, against a real `aiaas serve` over raw sockets.

For every route of the app (enumerated from the app itself, so a new route is covered), a request
without a valid key that announces a 50 MB body gets its 401 before the client has sent a single body
byte: the test reads the answer first and only then would send the body. And an authenticated upload
over the framework's 1 MB spool threshold leaves no file in the server's temporary directory.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from aiaas.api.app import create_app
from aiaas.core.settings import Settings
from aiaas.security.keys import generate_key
from aiaas.security.policy import POLICY, PUBLIC
from tests.conftest import TEST_SECRET
from tests.e2e.server import base_env, init, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ANNOUNCED = 50 * 1024 * 1024  # an upload's body; under AIAAS_MAX_UPLOAD_BYTES
SMALL = 1_500_000  # any other route's body: under AIAAS_MAX_REQUEST_BYTES, so no 413 answers first


def _routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, included routers flattened."""
    app = create_app(Settings(env="test", data_dir=tmp_path / "enum", secret_key=TEST_SECRET, job_workers=0))

    def walk(routes) -> list:
        out = []
        for r in routes:
            inner = getattr(r, "original_router", None)
            out += walk(inner.routes) if inner is not None else [r]
        return out

    found = set()
    for r in walk(app.router.routes):
        if isinstance(r, APIRoute | Route):
            # `{model:path}` (a model ref may hold a slash) is `{model}` in the document and the policy.
            path = re.sub(r"\{(\w+):path\}", r"{\1}", r.path)
            found |= {(m, path) for m in (r.methods or ()) if m != "HEAD"}
    # Cross-checks: the walk saw every documented operation and every route of the policy table.
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert documented <= found and set(POLICY) <= found, (documented | set(POLICY)) - found
    return sorted(found)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("authbody")
    spool = tmp / "tmp"
    spool.mkdir()
    env = base_env(tmp / "data", TMPDIR=str(spool))
    admin_key = init(env)
    srv = start_server(env, tmp)
    srv.admin_key = admin_key  # type: ignore[attr-defined]
    srv.spool = spool  # type: ignore[attr-defined]
    srv.routes = _routes(tmp)  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def _head_only(base_url: str, method: str, path: str, headers: dict[str, str],
               announced: int = ANNOUNCED) -> tuple[int, dict[str, str]]:
    """Send only the request head announcing a body of `announced` bytes; return the status and headers that come back
    before any body byte is sent (status 0 if none comes within 5 s: the server is waiting for the body)."""
    host, port = base_url.removeprefix("http://").split(":")
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {announced}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return 0, {}
    status_line, *lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), fields


KEYS = {
    "none": {},
    "malformed": {"Authorization": "Bearer not-a-key"},
    "unknown": {"Authorization": f"Bearer {generate_key()}"},  # well formed, checksum right, no such key
    "x-api-key": {"X-Api-Key": generate_key()},
}


@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_route_answers_401_before_reading_a_body(server, key):
    public = {path for (_m, path), scope in POLICY.items() if scope is PUBLIC}
    refused, wrong = 0, []
    for method, template in server.routes:
        path = re.sub(r"\{[^}]+\}", "x", template)
        upload = path == "/v1/files"
        content_type = "multipart/form-data; boundary=b" if upload else "application/json"
        status, headers = _head_only(server.base_url, method, path, KEYS[key] | {"Content-Type": content_type},
                                     ANNOUNCED if upload else SMALL)
        if path in public or not (template.startswith("/v1") or template.startswith("/v2")):
            # Health, metrics, docs: answered without the body, whatever the answer.
            if status == 0:
                wrong.append(f"{method} {template}: waited for the body")
            continue
        refused += 1
        if status != 401 or headers.get("connection") != "close":
            wrong.append(f"{method} {template}: {status or 'waited for the body'} {headers.get('connection')}")
    assert wrong == [], "\n".join(wrong)
    assert refused >= 30  # every authenticated route was tried


def test_a_valid_key_still_reaches_the_route_and_a_refused_body_is_never_read(server):
    # The 401 came with Connection: close: sending the body afterwards finds the connection shut.
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nContent-Length: {ANNOUNCED}\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 401")
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe: nobody reads the 50 MB
            for _ in range(ANNOUNCED // 65536):
                sent += sock.send(b"\0" * 65536)
                if not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    raise ConnectionResetError("closed by the server")
        assert sent < ANNOUNCED
    # An authenticated request is let through to read its body (here: an invalid JSON body -> 400).
    r = httpx.post(server.base_url + "/v1/fine_tuning/jobs", content=b"{", timeout=10,
                   headers={"Authorization": f"Bearer {server.admin_key}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def _server_files_under(pid: int, root: Path) -> list[str]:
    """Files under `root` the server process has open (unnamed O_TMPFILE files show as '/root/#123 (deleted)')."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(root)):
            found.append(target)
    return found


def test_an_authenticated_upload_stages_nothing_in_the_temp_dir(server):
    rows = b"".join(b"sentence number %d is about topic %d,%d\n" % (i, i % 7, i % 2) for i in range(80_000))
    content = b"text,label\n" + rows
    assert len(content) > 3 * 1024 * 1024
    boundary = "uploadboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    seen: list[str] = []
    paused = threading.Event()
    before = set(server.spool.rglob("*"))  # whatever libraries left there at start-up (not uploads)

    def slow_body():
        # 2.5 MB of the file (past the framework's 1 MB spool threshold), a pause to look, then the rest.
        cut = 2_500_000
        for i in range(0, cut, 256 * 1024):
            yield body[i:min(i + 256 * 1024, cut)]
        time.sleep(1.0)  # let the server take in what it was sent
        seen.extend(_server_files_under(server.proc.pid, server.spool))
        seen.extend(str(p) for p in set(server.spool.rglob("*")) - before)
        paused.set()
        yield body[cut:]

    r = httpx.post(server.base_url + "/v1/files", content=slow_body(), timeout=60,
                   headers={"Authorization": f"Bearer {server.admin_key}", "Content-Length": str(len(body)),
                            "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert paused.is_set()
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == len(content)
    assert seen == [], f"plaintext staged on disk during the upload: {seen}"
    assert set(server.spool.rglob("*")) == before and _server_files_under(server.proc.pid, server.spool) == []
