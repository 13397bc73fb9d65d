"""Load generators: closed loop (N clients, each sends its next request when the last one
answers) and open loop (Poisson arrivals at a fixed rate, latency from the scheduled
send time, so a slow server cannot slow the arrivals down and hide its queue).

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (uvloop when it is
installed): on a 2-core box the load generator shares the cores with the server, and
httpx costs several times more CPU per request; every config pays the same client.
Both loops stop by themselves after their duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Reuse an idle keep-alive connection only if it is younger than this: uvicorn closes idle
# connections after 5 s, and a request written as the server closes reads an empty answer.
# (httpx's pool uses the same 5 s expiry for the same reason.)
KEEPALIVE_EXPIRY_S = 2.0


@dataclass(frozen=True)
class Target:
    """Where to send, and the pre-encoded request bodies (one per benchmark sentence)."""

    host: str
    port: int
    path: str
    bodies: list[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # Per-body header lines (b"Name: value\r\n"), e.g. OIP's Inference-Header-Content-Length; empty: none.
    body_headers: list[bytes] = field(default_factory=list)

    def request_head(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Type: {self.content_type}",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n").encode()

    def item(self, k: int) -> tuple[bytes, bytes]:
        """(header lines of the k-th body, the body), cycling through the set."""
        i = k % len(self.bodies)
        return (self.body_headers[i] if self.body_headers else b""), self.bodies[i]


class Connection:
    """One keep-alive connection; `post` returns (status, body)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._head = target.request_head()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.target.host, self.target.port)

    async def post(self, body: bytes, extra: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            await self._open()
        assert self._reader is not None and self._writer is not None
        self._writer.write(self._head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            data = bytearray()
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data += await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                del data[-2:]
            payload = bytes(data)
        else:
            payload = await self._reader.readexactly(length)
        if close:
            self.close()
        self.last_used = time.perf_counter()
        return status, payload

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass
class Window:
    """What one measurement window saw."""

    seconds: float
    latencies_ms: np.ndarray
    errors: int
    cpu_s: float  # server process tree CPU over the window
    client_cpu_s: float  # this process (the load generator) over the window
    first_error: str | None = None

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    def summary(self) -> dict:
        lat = self.latencies_ms
        n = max(self.ok, 1)
        return {
            "requests": self.ok,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.ok / self.seconds, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if self.ok else None,
            "p90_ms": round(float(np.percentile(lat, 90)), 2) if self.ok else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if self.ok else None,
            "cpu_ms_per_request": round(1000.0 * self.cpu_s / n, 3),
            "server_cores_busy": round(self.cpu_s / self.seconds, 2),
            "client_cpu_ms_per_request": round(1000.0 * self.client_cpu_s / n, 3),
            **({"first_error": self.first_error} if self.first_error else {}),
        }


class _Recorder:
    """Requests that complete (closed loop) or are scheduled (open loop) inside [start, end)
    count; the CPU meters are read at both edges."""

    def __init__(self, cpu: Callable[[], float], *, by_sent: bool = False) -> None:
        self.cpu = cpu
        self.by_sent = by_sent
        self.start = self.end = float("inf")
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None
        self._cpu0 = self._client0 = 0.0
        self._cpu = self._client = 0.0

    def open(self) -> None:
        self._cpu0, self._client0 = self.cpu(), time.process_time()
        self.start = time.perf_counter()

    def close(self) -> None:
        self.end = time.perf_counter()
        self._cpu, self._client = self.cpu() - self._cpu0, time.process_time() - self._client0

    def result(self) -> Window:
        """Call once every request that can count has answered."""
        return Window(
            self.end - self.start,
            np.array(self.latencies, dtype=np.float64),
            self.errors,
            self._cpu,
            self._client,
            self.first_error,
        )

    def record(self, sent: float, done: float, status: int | None, error: str | None = None) -> None:
        if not self.start <= (sent if self.by_sent else done) < self.end:
            return
        if status == 200:
            self.latencies.append(1000.0 * (done - sent))
        else:
            self.errors += 1
            if self.first_error is None:
                self.first_error = error or f"HTTP {status}"


async def _timeline(rec: _Recorder, warmup_s: float, window_s: float) -> None:
    await asyncio.sleep(warmup_s)
    rec.open()
    await asyncio.sleep(window_s)
    rec.close()


async def _closed_loop(
    target: Target, clients: int, warmup_s: float, window_s: float, cpu: Callable[[], float]
) -> Window:
    rec = _Recorder(cpu)
    done = asyncio.Event()

    async def client(index: int) -> None:
        conn = Connection(target)
        k = index * (len(target.bodies) // clients)  # each client starts at its own place in the set
        try:
            while not done.is_set():
                extra, body = target.item(k)
                k += 1
                sent = time.perf_counter()
                try:
                    status, _ = await conn.post(body, extra)
                    rec.record(sent, time.perf_counter(), status)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    rec.record(sent, time.perf_counter(), None, f"{type(exc).__name__}: {exc}")
                    conn.close()
                    await asyncio.sleep(0.01)
        finally:
            conn.close()

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await _timeline(rec, warmup_s, window_s)
    done.set()
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        task.cancel()
    return rec.result()


async def _open_loop(
    target: Target,
    rate: float,
    warmup_s: float,
    window_s: float,
    cpu: Callable[[], float],
    seed: int,
    max_connections: int,
) -> Window:
    rec = _Recorder(cpu, by_sent=True)
    rng = random.Random(seed)
    idle: list[Connection] = [Connection(target) for _ in range(32)]
    opened = len(idle)
    pending: set[asyncio.Task] = set()

    async def one(scheduled: float, item: tuple[bytes, bytes]) -> None:
        nonlocal opened
        while not idle and opened >= max_connections:  # pool exhausted: the wait counts as latency
            await asyncio.sleep(0.0005)
        if idle:
            conn = idle.pop()  # the most recently used first
            if time.perf_counter() - conn.last_used > KEEPALIVE_EXPIRY_S:
                conn.close()  # the server may be closing it right now; reconnect instead of racing
        else:
            conn, opened = Connection(target), opened + 1
        try:
            status, _ = await conn.post(item[1], item[0])
            rec.record(scheduled, time.perf_counter(), status)
            idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            rec.record(scheduled, time.perf_counter(), None, f"{type(exc).__name__}: {exc}")
            conn.close()
            idle.append(conn)

    timeline = asyncio.create_task(_timeline(rec, warmup_s, window_s))
    start = time.perf_counter()
    stop_at = start + warmup_s + window_s
    next_at, k = start, 0
    while next_at < stop_at:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(next_at, target.item(k)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        k += 1
        next_at += rng.expovariate(rate)
    await timeline
    if pending:
        await asyncio.wait(pending, timeout=30)
    for conn in idle:
        conn.close()
    return rec.result()


def _run(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with contextlib.closing(uvloop.new_event_loop()) as loop:
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(coro)
        finally:
            asyncio.set_event_loop(None)


def closed_loop(
    target: Target, *, clients: int, warmup_s: float, window_s: float, cpu: Callable[[], float]
) -> Window:
    """`clients` concurrent clients back to back; measures after `warmup_s` for `window_s`."""
    return _run(_closed_loop(target, clients, warmup_s, window_s, cpu))


def open_loop(
    target: Target,
    *,
    rate: float,
    warmup_s: float,
    window_s: float,
    cpu: Callable[[], float],
    seed: int = 0,
    max_connections: int = 256,
) -> Window:
    """Poisson arrivals at `rate` per second; latency is measured from each scheduled send time."""
    return _run(_open_loop(target, rate, warmup_s, window_s, cpu, seed, max_connections))


def warm(target: Target, *, requests: int, clients: int = 4) -> None:
    """Send a fixed number of requests (first-call costs: model load, allocations, JIT)."""

    async def go() -> None:
        queue = list(range(requests))

        async def client() -> None:
            conn = Connection(target)
            try:
                while queue:
                    k = queue.pop()
                    extra, sent = target.item(k)
                    status, body = await conn.post(sent, extra)
                    if status != 200:
                        raise RuntimeError(
                            f"warm-up request to {target.path} got HTTP {status}: {body[:300]!r}"
                        )
            finally:
                conn.close()

        await asyncio.gather(*(client() for _ in range(clients)))

    _run(go())
