"""The one code -> HTTP status table is complete and consistent with everything that answers a code."""

from __future__ import annotations

import ast
from http import HTTPStatus
from pathlib import Path

import pytest

import aiaas
from aiaas.core import errors
from aiaas.core.errors import ERROR_TYPE, HTTP_STATUS, AiaasError, NotFound, not_found, status_for, type_for

PACKAGE = Path(aiaas.__file__).parent
# Codes the SDK makes up on the client side (never sent by a server).
CLIENT_ONLY = {"connection_error"}
# Answered by the router for a method a route does not have, never by a route (nor to the SDK's calls).
ROUTING_ONLY = {405}


def _codes_written_in_the_source() -> dict[str, list[str]]:
    """Every literal error code in aiaas: `code = "x"` in a class body and `code="x"` in a call."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(PACKAGE.parent))
        for node in ast.walk(tree):
            literal = None
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else (
                        stmt.target if isinstance(stmt, ast.AnnAssign) else None)
                    value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
                    # A `code: str | None = None` field (the SDK's result shapes) is not a code.
                    if (isinstance(target, ast.Name) and target.id == "code" and isinstance(value, ast.Constant)
                            and isinstance(value.value, str)):
                        literal = value.value
                        found.setdefault(literal, []).append(f"{where}:{stmt.lineno}")
            elif isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                        found.setdefault(kw.value.value, []).append(f"{where}:{node.lineno}")
    return found


def _error_classes() -> list[type[AiaasError]]:
    seen: list[type[AiaasError]] = []
    todo = [AiaasError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in seen if c.__module__ == errors.__name__]


def test_every_status_in_the_table_is_a_real_http_error_status() -> None:
    for code, status in HTTP_STATUS.items():
        assert 400 <= HTTPStatus(status) < 600, (code, status)
    for status in ERROR_TYPE:
        HTTPStatus(status)  # raises ValueError for a made-up status


def test_every_status_the_table_uses_has_its_own_error_type() -> None:
    """type_for has a fallback; a status answered on purpose should not depend on it."""
    missing = sorted({s for s in HTTP_STATUS.values()} - set(ERROR_TYPE))
    assert not missing, f"add these statuses to ERROR_TYPE: {missing}"
    assert type_for(429) == "rate_limit_error" and type_for(503) == "server_error"


def test_every_code_written_in_aiaas_is_in_the_table() -> None:
    """An unknown code silently becomes a 500 (status_for's default): each one must be listed."""
    found = _codes_written_in_the_source()
    assert len(found) > 15  # the scan does find them (class attributes and code= arguments)
    unknown = {code: places for code, places in found.items() if code not in HTTP_STATUS and code not in CLIENT_ONLY}
    assert not unknown, f"codes missing from core.errors.HTTP_STATUS: {unknown}"


def test_the_api_codes_for_starlette_http_errors_match_their_status() -> None:
    """The API answers routing errors (404, 405, ...) with a code; the body's type must match the status."""
    from aiaas.api.errors import _HTTP_CODES

    for status, code in _HTTP_CODES.items():
        assert status_for(code) == status, f"{code!r} is answered with {status} but the table says {status_for(code)}"


def test_every_error_class_answers_the_status_of_its_code() -> None:
    classes = _error_classes()
    assert len(classes) > 10
    for cls in classes:
        assert cls.code in HTTP_STATUS, cls
        err = cls("message")
        assert err.status == HTTP_STATUS[cls.code]
        assert err.to_dict() == {"message": "message", "type": type_for(err.status), "code": cls.code, "param": None}


def test_a_code_given_at_raise_time_overrides_the_class_code_for_that_error_only() -> None:
    err = errors.AuthenticationFailed("Key revoked.", code="revoked_api_key", param="authorization")
    assert (err.code, err.status, err.param) == ("revoked_api_key", 401, "authorization")
    assert errors.AuthenticationFailed.code == "invalid_api_key"
    assert errors.AuthenticationFailed("x").code == "invalid_api_key"


def test_unknown_codes_are_server_errors() -> None:
    assert status_for("no_such_code") == 500
    assert AiaasError("boom", code="no_such_code").to_dict()["type"] == "server_error"


def test_not_found_reads_the_same_for_every_kind_of_object() -> None:
    err = not_found("file", "file-123", param="file_id")
    assert isinstance(err, NotFound) and err.status == 404
    assert err.to_dict() == {"message": "No file with id 'file-123'.", "type": "not_found_error",
                             "code": "not_found", "param": "file_id"}


def test_every_status_is_declared_in_the_openapi_errors() -> None:
    from aiaas.protocol.common import ErrorResponse, declared_errors

    declared = declared_errors(ErrorResponse)
    missing = sorted({s for s in HTTP_STATUS.values()} - set(declared) - ROUTING_ONLY)
    assert not missing, f"declared_errors does not list {missing}"


@pytest.mark.parametrize("status", sorted(set(HTTP_STATUS.values())))
def test_the_sdk_rebuilds_a_typed_error_for_every_status(status: int) -> None:
    import httpx

    from aiaas.sdk.errors import APIError, error_from_response

    code = next(c for c, s in HTTP_STATUS.items() if s == status)
    resp = httpx.Response(status, json={"error": {"message": "m", "type": type_for(status), "code": code,
                                                  "param": None}})
    err = error_from_response(resp)
    assert isinstance(err, APIError) and err.code == code and err.status == status
    if status != 400 and status not in ROUTING_ONLY:  # 400 is the base "bad request"; the rest have a class
        assert type(err) is not APIError, status
