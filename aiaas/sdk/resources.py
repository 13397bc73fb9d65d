"""Resource methods, written once as request builders.

Each method returns `self._c.call(request)`: a result for the sync client, an awaitable
for the async one. So `client.api_keys.create(...)` and `await aclient.api_keys.create(...)`
share one implementation. List methods return the client's page iterator (sync or async).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    files: Any = None
    data: Any = None
    raw: bool = False
    idempotent: bool = True


class Caller(Protocol):
    def call(self, req: Request) -> Any: ...
    def iterate(self, path: str, *, limit: int, **params: Any) -> Any: ...


def clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class Resource:
    def __init__(self, caller: Caller) -> None:
        self._c = caller


class Organizations(Resource):
    def me(self) -> Any:
        return self._c.call(Request("GET", "/v1/organizations/me"))


class ApiKeys(Resource):
    def create(self, name: str, *, scopes: list[str] | None = None, expires_in_seconds: int | None = None) -> Any:
        body = clean({"name": name, "scopes": scopes, "expires_in_seconds": expires_in_seconds})
        return self._c.call(Request("POST", "/v1/api_keys", json=body, idempotent=False))

    def list(self, *, limit: int = 20) -> Any:
        return self._c.iterate("/v1/api_keys", limit=limit)

    def revoke(self, key_id: str) -> Any:
        return self._c.call(Request("DELETE", f"/v1/api_keys/{key_id}"))


def attach_resources(caller: Caller) -> None:
    """Give a client its resource namespaces."""
    caller.organizations = Organizations(caller)  # type: ignore[attr-defined]
    caller.api_keys = ApiKeys(caller)  # type: ignore[attr-defined]
