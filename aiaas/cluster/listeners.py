"""Which TCP ports a set of processes listens on, read from /proc (Linux), without psutil.

Used to prove that a Ray session opened nothing beyond loopback: the test suite fails on
any other listener, and `check_loopback_only()` lets an operator run the same check.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")
TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str
    ip: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.ip)

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port} (pid {self.pid}, {self.name})"


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4-mapped loopback (::ffff:127.x) count; wildcards do not."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _decode(hex_addr: str) -> tuple[str, int]:
    """`0100007F:1F90` -> ("127.0.0.1", 8080); /proc prints each 32-bit word in host (little-endian) order."""
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(words)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return f"::ffff:{addr.ipv4_mapped}", int(port, 16)  # as `ss` prints it
    return str(addr), int(port, 16)


def _listening_inodes(pid: int) -> dict[int, tuple[str, int]]:
    """inode -> (ip, port) for every listening TCP socket in the process's network namespace."""
    out: dict[int, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / str(pid) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == TCP_LISTEN:
                out[int(fields[9])] = _decode(fields[1])
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = PROC / str(pid) / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:  # gone, or not ours to read
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _name(pid: int) -> str:
    try:
        cmd = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace").strip()
        return cmd[:120] or (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Ray's raylet, GCS, agents and workers of a local session)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may contain spaces, so split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def listening_sockets(pids: Iterable[int]) -> list[Listener]:
    """Every listening TCP socket held by these processes."""
    found: list[Listener] = []
    tables: dict[str, dict[int, tuple[str, int]]] = {}
    for pid in pids:
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        try:
            netns = os.readlink(PROC / str(pid) / "ns" / "net")
        except OSError:
            netns = str(pid)
        table = tables.get(netns)
        if table is None:
            table = tables[netns] = _listening_inodes(pid)
        for inode in inodes & table.keys():
            ip, port = table[inode]
            found.append(Listener(pid=pid, name=_name(pid), ip=ip, port=port))
    return sorted(found, key=lambda x: (x.pid, x.port))


def non_loopback(listeners: Iterable[Listener]) -> list[Listener]:
    return [x for x in listeners if not x.loopback]


def check_loopback_only(root_pid: int | None = None) -> list[Listener]:
    """Listeners of `root_pid` (default: this process) and its descendants; logs any that are not loopback."""
    listeners = listening_sockets(descendants(root_pid or os.getpid()))
    for bad in non_loopback(listeners):
        log.warning("listening beyond loopback: %s", bad)
    return listeners
