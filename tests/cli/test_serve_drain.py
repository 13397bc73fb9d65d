"""`aiaas serve`'s shutdown drain: a request a client has already written is read before idle connections are
closed, however long the event loop takes to get to it (the kernel's unread-byte count says what is waiting)."""

from __future__ import annotations

import asyncio
import socket
import types

from aiaas.cli.serve import _drain_reads, _unread_bytes


class _Transport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str):
        return self.sock if name == "socket" else None


def test_unread_bytes_counts_what_the_client_sent_and_the_server_has_not_read():
    server, client = socket.socketpair()
    with server, client:
        conn = types.SimpleNamespace(transport=_Transport(server), cycle=None)
        assert _unread_bytes(conn) == 0
        client.sendall(b"POST /v1/x HTTP/1.1\r\n")
        assert _unread_bytes(conn) == 21
        server.recv(64)
        assert _unread_bytes(conn) == 0
    assert _unread_bytes(types.SimpleNamespace(transport=None)) == 0


def test_drain_waits_past_the_settle_time_while_sent_bytes_are_unread():
    server, client = socket.socketpair()
    with server, client:
        conn = types.SimpleNamespace(transport=_Transport(server), cycle=None)
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")

        async def main() -> float:
            loop = asyncio.get_running_loop()
            loop.call_later(0.5, server.recv, 64)  # the "event loop" reads the request only after 0.5 s
            t0 = loop.time()
            await _drain_reads([conn], settle_s=0.1, max_s=3.0)
            return loop.time() - t0

        waited = asyncio.run(main())
    assert 0.5 <= waited < 1.5, waited


def test_drain_gives_up_at_its_bound_when_bytes_stay_unread():
    server, client = socket.socketpair()
    with server, client:
        conn = types.SimpleNamespace(transport=_Transport(server), cycle=None)
        client.sendall(b"x")

        async def main() -> float:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await _drain_reads([conn], settle_s=0.05, max_s=0.4)
            return loop.time() - t0

        assert 0.4 <= asyncio.run(main()) < 1.0
