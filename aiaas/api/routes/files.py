"""/v1/files — upload, list, retrieve, content, delete (OpenAI shapes)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import StreamingResponse

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep
from aiaas.protocol.common import Deleted, list_response
from aiaas.protocol.files import FilePublic, PiiPolicy, file_public
from aiaas.services import audit
from aiaas.services import files as file_service
from aiaas.store import files as file_store

router = APIRouter(prefix="/v1", tags=["files"])


@router.post("/files", response_model=FilePublic)
def upload_file(
    file: UploadFile,
    purpose: Annotated[str, Form()],
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    actor: ActorDep,
    pii_policy: Annotated[PiiPolicy, Form(description="allow (default), redact or reject personal data "
                                           "found in the file; see the file's summary.pii")] = "allow",
) -> dict:
    # A sync route: FastAPI runs it in the thread pool, so copying, parsing and the PII scan
    # stay off the event loop.
    row = file_service.upload(
        session, state.services.blobs, org_id=principal.org_id, src=file.file, filename=file.filename,
        purpose=purpose, max_bytes=state.settings.max_upload_bytes, settings=state.settings,
        pii_policy=pii_policy,
    )
    pii = (row.summary or {}).get("pii") or {}
    audit.record(session, actor, "file.uploaded", target_type="file", target_id=row.id,
                 details={"filename": row.filename, "bytes": row.bytes, "purpose": row.purpose,
                          "pii_policy": pii_policy, "pii_redacted": pii.get("redacted", 0),
                          "pii_counts": {k: n for k, n in (pii.get("counts") or {}).items() if n}})
    return file_public(row)


@router.get("/files")
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


@router.get("/files/{file_id}", response_model=FilePublic)
def retrieve_file(file_id: str, principal: PrincipalDep, session: SessionDep) -> dict:
    return file_public(file_store.get_file(session, principal.org_id, file_id))


@router.get("/files/{file_id}/content", response_class=StreamingResponse)
def file_content(file_id: str, principal: PrincipalDep, session: SessionDep,
                 state: StateDep) -> StreamingResponse:
    row, chunks = file_service.content(session, state.services.blobs, org_id=principal.org_id,
                                       file_id=file_id)
    # Decrypted frame by frame as it is sent; Content-Length lets a client notice a cut-short body.
    disposition = f"attachment; filename*=utf-8''{quote(row.filename)}"
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"Content-Length": str(row.bytes), "Content-Disposition": disposition})


@router.delete("/files/{file_id}", response_model=Deleted)
def delete_file(file_id: str, principal: PrincipalDep, session: SessionDep, state: StateDep,
                actor: ActorDep) -> dict:
    row = file_service.delete(session, state.services.blobs, org_id=principal.org_id, file_id=file_id)
    audit.record(session, actor, "file.deleted", target_type="file", target_id=row.id,
                 details={"filename": row.filename})
    return {"id": row.id, "object": "file", "deleted": True}
