"""/v1/files — upload, list, retrieve, content, delete (OpenAI shapes).

An upload's form is parsed here rather than by the framework, whose parser spools any file part
over 1 MB to a temporary file: plaintext on disk before the upload was even checked. Here every part
stays in memory; what is in memory at once is bounded by the edge middleware's upload bytes in
flight (AIAAS_UPLOAD_BYTES_IN_FLIGHT) and each body by AIAAS_MAX_UPLOAD_BYTES.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, BinaryIO, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.errors import AiaasError, InvalidRequest
from aiaas.protocol.common import Deleted, list_response
from aiaas.protocol.files import PII_POLICIES, FilePublic, file_public
from aiaas.services import audit
from aiaas.services import files as file_service
from aiaas.store import files as file_store

router = APIRouter(prefix="/v1", tags=["files"])

_UPLOAD_FORM: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "purpose"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"type": "string", "enum": ["fine-tune", "batch"]},
            "pii_policy": {"type": "string", "enum": list(PII_POLICIES), "default": "allow",
                           "description": "allow (default), redact or reject personal data found in the "
                                          "file; see the file's summary.pii"},
        },
    }}}},
}


async def upload_form(request: Request, _principal: PrincipalDep) -> AsyncIterator[FormData]:
    """The upload's form, every part held in memory (never spooled to a temporary file).
    After the principal: the key is checked before a byte of the body is parsed."""
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=10)
    parser.spool_max_size = 0  # 0: a SpooledTemporaryFile that never rolls over to disk
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"The upload is not a valid multipart form ({exc.message}); send the file as "
                             "the 'file' field of a multipart/form-data body.", param="file") from None
    try:
        yield form
    finally:
        await form.close()


class _ReadOnce:
    """A part read once: its memory is given back as soon as the reader reaches its end."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def read(self, size: int = -1) -> bytes:
        chunk = self.fh.read(size)
        if not chunk:
            self.fh.truncate(0)
        return chunk


def _field(form: FormData, name: str, *, required: bool = True) -> Any:
    value = form.get(name)
    if value is None and required:
        raise AiaasError(f"Missing required field '{name}'.", code="validation_error", param=name)
    return value


@router.post("/files", response_model=FilePublic, openapi_extra=_UPLOAD_FORM,
             responses=documented(None, *r.UPLOAD_ERRORS, post=True))
def upload_file(
    principal: PrincipalDep,
    form: Annotated[FormData, Depends(upload_form, scope="function")],
    session: SessionDep,
    state: StateDep,
    actor: ActorDep,
) -> dict:
    # A sync route: FastAPI runs it in the thread pool, so copying, parsing and the PII scan
    # stay off the event loop.
    file, purpose = _field(form, "file"), _field(form, "purpose")
    pii_policy = _field(form, "pii_policy", required=False) or "allow"
    if not isinstance(file, UploadFile):
        raise AiaasError("Field 'file' must be a file part (with a filename).", code="validation_error",
                         param="file")
    if not isinstance(purpose, str) or not isinstance(pii_policy, str):
        raise AiaasError("Fields 'purpose' and 'pii_policy' must be text.", code="validation_error",
                         param="purpose")
    row = file_service.upload(
        session, state.services.blobs, org_id=principal.org_id, src=_ReadOnce(file.file),  # type: ignore[arg-type]
        filename=file.filename, purpose=purpose, max_bytes=state.settings.max_upload_bytes,
        settings=state.settings, pii_policy=pii_policy,
    )
    pii = (row.summary or {}).get("pii") or {}
    audit.record(session, actor, "file.uploaded", target_type="file", target_id=row.id,
                 details={"filename": row.filename, "bytes": row.bytes, "purpose": row.purpose,
                          "pii_policy": pii_policy, "pii_redacted": pii.get("redacted", 0),
                          "pii_counts": {k: n for k, n in (pii.get("counts") or {}).items() if n}})
    return file_public(row)


@router.get("/files", responses=documented(r.Page[FilePublic]))
def list_files(
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict:
    rows, has_more = file_store.list_files(session, principal.org_id, after=after, limit=limit, order=order,
                                           purpose=purpose)
    return list_response([file_public(r) for r in rows], has_more=has_more)


@router.get("/files/{file_id}", response_model=FilePublic, responses=documented(None, "not_found"))
def retrieve_file(file_id: str, principal: PrincipalDep, session: SessionDep) -> dict:
    return file_public(file_store.get_file(session, principal.org_id, file_id))


@router.get("/files/{file_id}/content", response_class=StreamingResponse,
            responses=documented(None, "not_found", media=r.OCTETS))
def file_content(file_id: str, principal: PrincipalDep, session: SessionDep,
                 state: StateDep) -> StreamingResponse:
    row, chunks = file_service.content(session, state.services.blobs, org_id=principal.org_id,
                                       file_id=file_id)
    # Decrypted frame by frame as it is sent; Content-Length lets a client notice a cut-short body.
    disposition = f"attachment; filename*=utf-8''{quote(row.filename)}"
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"Content-Length": str(row.bytes), "Content-Disposition": disposition})


@router.delete("/files/{file_id}", response_model=Deleted, responses=documented(None, "not_found", "conflict"))
def delete_file(file_id: str, principal: PrincipalDep, session: SessionDep, state: StateDep,
                actor: ActorDep) -> dict:
    row = file_service.delete(session, state.services.blobs, org_id=principal.org_id, file_id=file_id)
    audit.record(session, actor, "file.deleted", target_type="file", target_id=row.id,
                 details={"filename": row.filename})
    return {"id": row.id, "object": "file", "deleted": True}
