"""/v1/files — upload, list, retrieve, content, delete (OpenAI shapes).

An upload's body is parsed here rather than by the framework, whose parser holds every part (and
spools a file part over 1 MB to a temporary file: plaintext on disk before the upload was checked).
The file part streams into the encrypting blob store as it arrives (aiaas/api/uploads.py), so an
upload holds a few megabytes of memory whatever its size (each body is still capped by
AIAAS_MAX_UPLOAD_BYTES, and the bodies received at once by AIAAS_UPLOAD_BYTES_IN_FLIGHT). The check
then runs off the event loop: before the answer for files up to AIAAS_UPLOAD_INLINE_BYTES, in the
background for larger ones (status "uploaded", then "processed" or "error").
"""

from __future__ import annotations

from typing import Annotated, Any, BinaryIO, Literal
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep
from aiaas.api.openapi import documented
from aiaas.api.uploads import StreamedForm, stream_form
from aiaas.core.errors import AiaasError, InvalidRequest
from aiaas.protocol import responses as r
from aiaas.protocol.common import Deleted, list_response
from aiaas.protocol.files import PII_POLICIES, FilePublic, file_public
from aiaas.services import audit
from aiaas.services import files as file_service
from aiaas.store import files as file_store
from aiaas.store.models import File

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


def _fields(form: StreamedForm) -> tuple[str, str]:
    """(purpose, pii_policy), or the error naming the field that is missing or wrong."""
    if form.stored is None:
        if "file" in form.fields:
            raise AiaasError("Field 'file' must be a file part (with a filename).", code="validation_error",
                             param="file")
        raise AiaasError("Missing required field 'file'.", code="validation_error", param="file")
    purpose = form.fields.get("purpose")
    if purpose is None:
        raise AiaasError("Missing required field 'purpose'.", code="validation_error", param="purpose")
    return purpose, form.fields.get("pii_policy") or "allow"


@router.post("/files", response_model=FilePublic, openapi_extra=_UPLOAD_FORM,
             responses=documented(None, *r.UPLOAD_ERRORS, post=True))
async def upload_file(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    actor: ActorDep,
    background: BackgroundTasks,
) -> dict:
    blobs, settings = state.services.blobs, state.settings

    def put(src: BinaryIO) -> file_service.Received:
        return file_service.receive(blobs, org_id=principal.org_id, src=src, max_bytes=settings.max_upload_bytes)

    form = await stream_form(request, put)
    received = form.stored if isinstance(form.stored, file_service.Received) else None
    try:
        purpose, pii_policy = _fields(form)
    except BaseException:
        file_service.discard(blobs, received)
        raise
    assert received is not None
    # The check (parsing, the PII scan) and the database run in the thread pool, off the event loop.
    row = await run_in_threadpool(_accept, session, state, received, principal.org_id, form.filename, purpose,
                                  pii_policy, actor)
    checker = state.services.file_checks
    if row.status == "uploaded" and checker is not None:
        background.add_task(checker.submit, principal.org_id, row.id)  # after the commit, so it sees the row
    return file_public(row)


def _accept(session: Any, state: Any, received: file_service.Received, org_id: str, filename: str | None,
            purpose: str, pii_policy: str, actor: Any) -> File:
    settings = state.settings
    defer = settings.upload_inline_bytes if state.services.file_checks is not None else None
    row = file_service.accept(session, state.services.blobs, received, org_id=org_id, filename=filename,
                              purpose=purpose, settings=settings, pii_policy=pii_policy, defer_over=defer)
    pii = (row.summary or {}).get("pii") or {}
    audit.record(session, actor, "file.uploaded", target_type="file", target_id=row.id,
                 details={"filename": row.filename, "bytes": row.bytes, "purpose": row.purpose,
                          "pii_policy": pii_policy, "pii_redacted": pii.get("redacted", 0),
                          "pii_counts": {k: n for k, n in (pii.get("counts") or {}).items() if n}})
    return row


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
