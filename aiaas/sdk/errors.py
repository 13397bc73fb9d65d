"""Typed SDK errors, rebuilt from the server's error body (the same code the server sent)."""

from __future__ import annotations

from typing import Any

import httpx

from aiaas.core.errors import AiaasError


class APIError(AiaasError):
    """An error answered by the server. `code`, `message`, `param`, `status` and `request_id` as sent."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message, param=param, code=code or "internal_error")
        self.status_code = status
        self.request_id = request_id
        self.body = body

    @property
    def status(self) -> int:  # the status the server actually answered
        return self.status_code

    def __str__(self) -> str:
        where = f" (param: {self.param})" if self.param else ""
        return f"{self.status_code} {self.code}: {self.message}{where}"


class APIConnectionError(APIError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=0, code="connection_error")


class BadRequestError(APIError): ...


class AuthenticationError(APIError): ...


class PermissionDeniedError(APIError): ...


class NotFoundError(APIError): ...


class ConflictError(APIError): ...


class PayloadTooLargeError(APIError): ...


class RateLimitError(APIError): ...


class InternalServerError(APIError): ...


class ServiceUnavailableError(APIError): ...


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> APIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or response.reason_phrase)
        code, param, rid = err.get("code"), err.get("param"), err.get("request_id")
    else:
        message = str(err) if err else (response.text[:500] or response.reason_phrase)
        code, param, rid = None, None, None
    rid = rid or response.headers.get("x-request-id")
    cls = _BY_STATUS.get(response.status_code, InternalServerError if response.status_code >= 500 else APIError)
    return cls(message, status=response.status_code, code=code, param=param, request_id=rid, body=body)
