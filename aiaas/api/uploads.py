"""An upload's multipart body, streamed: the file part goes to the blob store as it arrives.

The framework's form parser holds every part (in memory, or spooled to a temporary file past 1 MB:
plaintext on disk). Here the body is parsed chunk by chunk on the event loop (python-multipart, no
I/O), and the file part's bytes are handed, in pieces of exactly PIECE bytes through a queue of
QUEUE_PIECES, to a thread that writes them to the store (`put`, which encrypts frame by frame). What an
upload holds in memory is therefore a few megabytes, whatever its size; a slow store slows the client
down (the queue is full, the body is not read) rather than filling memory.

Each byte of the file is copied once on its way to the store (into its piece): the parser's output is
kept as views of the received chunks, and a piece is the size of the store's encryption frame
(crypto.DEFAULT_CHUNK_SIZE), so the storing thread reads whole pieces and copies nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, cast

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from aiaas.core.errors import InvalidRequest
from aiaas.security.crypto import DEFAULT_CHUNK_SIZE

PIECE = DEFAULT_CHUNK_SIZE  # the store encrypts PIECE-byte frames: a piece is read whole, never split
QUEUE_PIECES = 4
MAX_FIELDS = 10
MAX_FIELD_BYTES = 4096
_END = b""


class _Aborted(Exception):
    """The request ended before its file did (the client left, or the form was bad)."""


def _bad_form(detail: str) -> InvalidRequest:
    return InvalidRequest(f"The upload is not a valid multipart form ({detail}); send the file as the 'file' "
                          "field of a multipart/form-data body.", param="file")


class _QueueReader:
    """read(n) for the storing thread, over pieces the event loop puts in an asyncio.Queue."""

    def __init__(self, queue: asyncio.Queue[bytes | None], loop: asyncio.AbstractEventLoop) -> None:
        self.queue = queue
        self.loop = loop
        self.piece = b""
        self.at = 0  # how much of `piece` has been read
        self.done = False

    def read(self, size: int = -1) -> bytes:
        if self.at == len(self.piece) and not self.done:
            piece = asyncio.run_coroutine_threadsafe(self.queue.get(), self.loop).result()
            if piece is None:
                raise _Aborted
            self.done = piece == _END
            self.piece, self.at = piece, 0
        left = len(self.piece) - self.at
        n = left if size is None or size < 0 else min(size, left)
        if self.at == 0 and n == len(self.piece):  # the whole piece (the usual read): handed over, not copied
            out = self.piece
        else:
            out = self.piece[self.at:self.at + n]
        self.at += n
        return out


class _Sink:
    """The storing thread, fed from the event loop with back-pressure."""

    def __init__(self, put: Callable[[BinaryIO], object]) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_PIECES)
        reader = _QueueReader(self.queue, asyncio.get_running_loop())
        self.task = asyncio.ensure_future(anyio.to_thread.run_sync(put, cast(BinaryIO, reader)))

    async def send(self, piece: bytes) -> None:
        putting = asyncio.ensure_future(self.queue.put(piece))
        await asyncio.wait({putting, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not putting.done():  # the thread stopped (an error such as the size limit): say why
            putting.cancel()
            self.task.result()
            raise RuntimeError("the upload's storing thread stopped early")

    async def finish(self) -> object:
        await self.send(_END)
        return await self.task

    async def abort(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
        with contextlib.suppress(Exception, _Aborted):
            await self.task


@dataclass
class StreamedForm:
    """The form's text fields, and what `put` returned for the file part (None: no file part)."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    stored: object | None = None
    file_field: str | None = None  # name of the part that carried a file


class _Parts:
    """python-multipart callbacks: text fields kept (small), the file part's bytes queued for the sink."""

    def __init__(self, charset: str, file_field: str) -> None:
        self.charset = charset
        self.file_field = file_field
        self.form = StreamedForm()
        self.pending: list[memoryview] = []  # views of the received chunks (bytes: never changed)
        self.pending_bytes = 0
        self.file_started = False
        self.file_ended = False
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self._part: str | None = None  # "file", or a field's name
        self._data = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self._headers, self._part, self._data = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise _bad_form('the Content-Disposition header field "name" must be provided')
        name = options[b"name"].decode(self.charset, "replace")
        if b"filename" in options:
            if self.file_started:
                raise _bad_form("too many files; send one file per upload")
            self.file_started = True
            self._part = "\0file"
            self.form.file_field = name
            self.form.filename = options[b"filename"].decode(self.charset, "replace")
        else:
            if len(self.form.fields) >= MAX_FIELDS:
                raise _bad_form(f"too many fields; at most {MAX_FIELDS}")
            self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "\0file":
            if self.form.file_field == self.file_field and end > start:
                # `data` is a received chunk or the parser's boundary constant, both immutable bytes
                # (bytes() copies only if a caller ever passed something else).
                self.pending.append(memoryview(data if isinstance(data, bytes) else bytes(data))[start:end])
                self.pending_bytes += end - start
            return
        if len(self._data) + end - start > MAX_FIELD_BYTES:
            raise _bad_form(f"field '{(self._part or '')[:40]}' is longer than {MAX_FIELD_BYTES} bytes")
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._part == "\0file":
            self.file_ended = True
        elif self._part is not None:
            self.form.fields.setdefault(self._part, self._data.decode(self.charset, "replace"))

    def take(self, size: int | None = None) -> bytes:
        """The first `size` pending bytes (all of them when None) as one bytes object: the one copy."""
        if size is None or size >= self.pending_bytes:
            out = b"".join(self.pending)
            self.pending.clear()
            self.pending_bytes = 0
            return out
        views, got = [], 0
        while got < size:
            view = self.pending[0]
            if got + len(view) <= size:
                views.append(self.pending.pop(0))
                got += len(view)
            else:
                views.append(view[:size - got])
                self.pending[0] = view[size - got:]
                got = size
        self.pending_bytes -= size
        return b"".join(views)


def _charset(params: dict[bytes, bytes]) -> str:
    try:
        return codecs.lookup(params.get(b"charset", b"utf-8").decode("latin-1")).name
    except LookupError:
        return "latin-1"


async def stream_form(request: Request, put: Callable[[BinaryIO], object], *,
                      file_field: str = "file") -> StreamedForm:
    """Parse the request's multipart body, streaming part `file_field`'s bytes into `put` (run in a thread).

    On any error the storing thread is told to stop (`put` sees an exception from read and keeps
    nothing) before the error propagates."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise _bad_form("the body must be multipart/form-data with a boundary")
    parts = _Parts(_charset(params), file_field)
    # python-multipart types the callbacks as its MultipartCallbacks TypedDict; this dict has those keys.
    parser = MultipartParser(params[b"boundary"], parts.callbacks())  # type: ignore[arg-type]
    sink: _Sink | None = None
    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise _bad_form(str(exc) or "invalid multipart data") from None
            if parts.file_started and parts.form.file_field == file_field and sink is None:
                sink = _Sink(put)
            if sink is not None:
                while parts.pending_bytes >= PIECE:
                    await sink.send(parts.take(PIECE))
                if parts.file_ended and parts.pending:
                    await sink.send(parts.take())
        try:
            parser.finalize()
        except FormParserError as exc:
            raise _bad_form(str(exc) or "invalid multipart data") from None
        if sink is not None:
            if not parts.file_ended:
                raise _bad_form("the file part is not closed by its boundary")
            if parts.pending:
                await sink.send(parts.take())
            parts.form.stored = await sink.finish()
    except BaseException:
        if sink is not None:
            await sink.abort()
        raise
    return parts.form


__all__ = ["StreamedForm", "stream_form"]
