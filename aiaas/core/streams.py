"""A file-like reader over an iterator of byte chunks.

Streaming code passes bytes along as generators (decrypted frames, encrypted frames, a redacted
file being written); readers such as BlobStore.put, csv or io.TextIOWrapper want `read()`. This
is the bridge, holding at most one chunk beyond what the caller asked for.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator


class ChunkReader(io.RawIOBase):
    """`read(n)` over `chunks`, pulling the next chunk only when the current one is used up."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks: Iterator[bytes] = iter(chunks)
        self._chunk = b""  # the chunk `_current` views
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    # typeshed's RawIOBase takes any Buffer; the callers here pass bytearray or memoryview only.
    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._chunk, self._current = chunk, memoryview(chunk)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._chunk, self._current = chunk, memoryview(chunk)
        if size >= len(self._current):
            whole = len(self._current) == len(self._chunk) and type(self._chunk) is bytes
            # A whole chunk that is bytes is handed over as it is (bytes never change): no copy.
            out = self._chunk if whole else bytes(self._current)
            self._chunk, self._current = b"", memoryview(b"")
            return out
        out = bytes(self._current[:size])
        self._current = self._current[size:]
        return out

    def close(self) -> None:
        closer = getattr(self._chunks, "close", None)
        if closer is not None:
            closer()  # a generator's cleanup (open files, decryptors) runs now, not at garbage collection
        super().close()
