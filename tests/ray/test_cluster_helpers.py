"""The cluster helpers that need no Ray session: listener parsing, Ray's environment, settings for nodes."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from aiaas.cluster.listeners import (
    Listener,
    _decode,
    descendants,
    is_loopback,
    listening_sockets,
    non_loopback,
)
from aiaas.cluster.loopback import SINGLE_HOST_VAR, is_loopback_host, ray_environment
from aiaas.cluster.node import blob_store_for, settings_from_payload, settings_payload
from aiaas.core.errors import ConfigurationError, Unavailable
from aiaas.core.settings import Settings
from tests.ray.moto_server import free_port


def test_proc_addresses_decode() -> None:
    assert _decode("0100007F:1F90") == ("127.0.0.1", 8080)
    assert _decode("00000000:0016") == ("0.0.0.0", 22)
    assert _decode("00000000000000000000000001000000:0050") == ("::1", 80)
    assert _decode("0000000000000000FFFF00000100007F:A5E7") == ("::ffff:127.0.0.1", 42471)
    assert _decode("00000000000000000000000000000000:A5E7") == ("::", 42471)


@pytest.mark.parametrize(("ip", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False),
])
def test_what_counts_as_loopback(ip: str, loopback: bool) -> None:
    assert is_loopback(ip) is loopback
    assert non_loopback([Listener(pid=1, name="x", ip=ip, port=1)]) == ([] if loopback else
                                                                        [Listener(pid=1, name="x", ip=ip, port=1)])


CHILD_LISTENER = (
    "import socket, time; s = socket.socket(socket.AF_INET6); s.bind(('::1', 0)); s.listen(); "
    "print(s.getsockname()[1], flush=True); time.sleep(30)"
)


def test_listening_sockets_of_a_process_tree() -> None:
    """A loopback listener of this process and one of a child process are both found, with their pids."""
    import subprocess

    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_LISTENER],
            stdout=subprocess.PIPE, text=True)
        try:
            child_port = int(child.stdout.readline())
            found = listening_sockets(descendants(os.getpid()))
            assert ("127.0.0.1", mine.getsockname()[1]) in {(x.ip, x.port) for x in found if x.pid == os.getpid()}
            theirs = [x for x in found if x.pid == child.pid]
            assert [(x.ip, x.port) for x in theirs] == [("::1", child_port)] and theirs[0].loopback
            assert child.pid in descendants(os.getpid())
        finally:
            child.kill()
            child.wait()
            child.stdout.close()


def test_ray_environment() -> None:
    env = ray_environment("127.0.0.1", "/secure/token")
    assert env[SINGLE_HOST_VAR] == "0"  # single-host mode: the only mode where Ray binds 127.0.0.1
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == "/secure/token"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["RAY_ENABLE_AUTO_CONNECT"] == "0"
    assert SINGLE_HOST_VAR not in ray_environment("10.1.2.3", "/t")  # a multi-node cluster
    assert is_loopback_host("localhost") and is_loopback_host("::1") and not is_loopback_host("node-1")


def test_settings_travel_without_the_master_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(env="test", data_dir=tmp_path, secret_key="s" * 40, blob_store_url="s3://b/p",
                        s3_endpoint_url="http://127.0.0.1:9", training_threads=None)
    payload = settings_payload(settings, training_threads=3)
    assert "secret_key" not in payload and payload["training_threads"] == 3
    monkeypatch.setenv("AIAAS_SECRET_KEY", "n" * 40)  # the node's own
    rebuilt = settings_from_payload(payload)
    assert rebuilt.master_secret() == "n" * 40 and rebuilt.data_dir == settings.data_dir
    store = blob_store_for(rebuilt)  # configured from these settings, not the process-wide ones
    assert store.endpoint_url == "http://127.0.0.1:9" and store.cache_dir == tmp_path / "cache" / "s3"


def test_joining_needs_the_token_and_fails_fast_on_a_dead_address(tmp_path: Path) -> None:
    from aiaas.cluster.session import connect, local_temp_dir

    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConfigurationError, match="AIAAS_RAY_AUTH_TOKEN_PATH"):
        connect(Settings(env="test", data_dir=tmp_path, cluster_address=dead))
    token = tmp_path / "token"
    token.write_text("t" * 32)
    with pytest.raises(Unavailable, match="not reachable"):
        connect(Settings(env="test", data_dir=tmp_path, cluster_address=dead, ray_auth_token_path=token))
    # Unix socket paths are short: a deep data dir gets a short private temp dir instead.
    deep = Settings(env="test", data_dir=tmp_path / ("x" * 60))
    assert len(str(local_temp_dir(deep))) <= 45
    with pytest.raises(ConfigurationError, match="too long"):
        connect(deep, temp_dir=tmp_path / ("y" * 60))
