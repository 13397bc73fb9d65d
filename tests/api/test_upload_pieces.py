"""The streamed upload's pieces: exactly PIECE bytes each (the last shorter), in order, whatever sizes the
body arrives in; the storing thread's reader hands whole pieces over without copying them."""

from __future__ import annotations

import asyncio
import os

import pytest
from python_multipart.multipart import MultipartParser

from aiaas.api.uploads import PIECE, _Parts, _QueueReader
from aiaas.core.streams import ChunkReader
from aiaas.security import crypto


def _body(payload: bytes) -> bytes:
    return (b'--bb\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            b'--bb\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
            + payload + b"\r\n--bb--\r\n")


@pytest.mark.parametrize("arrives_in", [1, 7001, 65536, PIECE + 3])
def test_pieces_are_exactly_piece_bytes_and_rebuild_the_file(arrives_in):
    # "\r\n--b" inside the payload: near-boundaries the parser must hand back from its look-behind.
    payload = (os.urandom(PIECE // 2) + b"\r\n--b\r\n-") * 5 if arrives_in > 1 else os.urandom(3000)
    parts = _Parts("utf-8", "file")
    parser = MultipartParser(b"bb", parts.callbacks())  # type: ignore[arg-type]
    body, pieces = _body(payload), []
    for i in range(0, len(body), arrives_in):
        parser.write(body[i:i + arrives_in])
        while parts.pending_bytes >= PIECE:
            pieces.append(parts.take(PIECE))
    parser.finalize()
    assert parts.file_ended and parts.form.fields == {"purpose": "fine-tune"}
    pieces.append(parts.take())
    assert b"".join(pieces) == payload
    assert all(len(p) == PIECE for p in pieces[:-1]) and 0 < len(pieces[-1]) <= PIECE
    assert all(type(p) is bytes for p in pieces) and parts.pending_bytes == 0 and not parts.pending


def test_the_queue_reader_hands_whole_pieces_over_and_slices_partial_reads():
    loop = asyncio.new_event_loop()
    try:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        first, last = os.urandom(PIECE), b"tail"
        for piece in (first, last, b""):
            queue.put_nowait(piece)
        reader = _QueueReader(queue, loop)

        async def read(n: int) -> bytes:
            return await asyncio.to_thread(reader.read, n)

        assert loop.run_until_complete(read(PIECE)) is first  # no copy
        assert loop.run_until_complete(read(2)) == b"ta"
        assert loop.run_until_complete(read(PIECE)) == b"il"
        assert loop.run_until_complete(read(PIECE)) == b""
    finally:
        loop.close()


def test_chunk_reader_returns_a_whole_bytes_chunk_itself_and_copies_parts():
    a, b = os.urandom(100), os.urandom(50)
    reader = ChunkReader(iter([a, bytearray(b)]))
    assert reader.read(1000) is a
    assert reader.read(20) == b[:20] and reader.read(1000) == b[20:]
    assert reader.read(10) == b""


def test_encrypt_stream_pieces_join_into_the_file_encrypt_file_writes():
    import io

    key, data = os.urandom(32), os.urandom(3 * 1000 + 7)
    pieces = list(crypto.encrypt_stream(io.BytesIO(data), key, aad=b"a", chunk_size=1000))
    assert [len(p) for p in pieces[1:]] == [crypto.NONCE_BYTES, 1000 + crypto.TAG_BYTES] * 3 + [
        crypto.NONCE_BYTES, 7 + crypto.TAG_BYTES]
    out = io.BytesIO()
    assert crypto.encrypt_file(io.BytesIO(data), out, key, aad=b"a", chunk_size=1000) == len(data)
    plain = io.BytesIO()
    assert crypto.decrypt_file(io.BytesIO(b"".join(pieces)), plain, key, aad=b"a") == len(data)
    assert plain.getvalue() == data
