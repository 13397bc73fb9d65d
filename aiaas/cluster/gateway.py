"""The serving gateway: Ray Serve deployments behind a small authenticated HTTP API, and its client.

The API process must not hold a Ray driver (a driver whose cluster goes away blocks or is
killed), so it reaches Ray Serve through this gateway, which runs in the dispatcher process
(`aiaas ray-dispatcher --gateway-port N`). Callers authenticate with a token derived from
the master secret that every aiaas process already shares, so there is nothing new to
distribute. Scores travel as JSON floats: float32 -> float64 -> float32 is exact.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import httpx
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aiaas.core.errors import AiaasError, AuthenticationFailed, InvalidRequest, Unavailable, status_for

log = logging.getLogger(__name__)

TOKEN_CONTEXT = b"aiaas/ray-gateway/v1"


def gateway_token(master_secret: str) -> str:
    return hmac.new(master_secret.encode(), TOKEN_CONTEXT, hashlib.sha256).hexdigest()


def _error(exc: AiaasError) -> JSONResponse:
    return JSONResponse({"error": {"code": exc.code, "message": exc.message, "param": exc.param}},
                        status_code=exc.status)


def create_gateway_app(backend: Any, token: str) -> Starlette:
    """`backend` is a RayServingBackend (or anything with its deploy/predict/delete)."""

    def authorized(request: Request) -> None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise AuthenticationFailed("Bad gateway token.")

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise InvalidRequest("The body must be JSON.") from None
        if not isinstance(data, dict):
            raise InvalidRequest("The body must be a JSON object.")
        return data

    async def deploy(request: Request) -> JSONResponse:
        authorized(request)
        data = await body(request)
        name = request.path_params["name"]
        await run_in_threadpool(backend.deploy, name, str(data.get("artifact_uri", "")),
                                int(data.get("min_replicas", 1)), int(data.get("max_replicas", 1)))
        return JSONResponse({"name": name, "replicas": await run_in_threadpool(backend.replicas, name)})

    async def predict(request: Request) -> JSONResponse:
        authorized(request)
        texts = (await body(request)).get("texts")
        if not isinstance(texts, list):
            raise InvalidRequest("'texts' must be a list of strings.", param="texts")
        scores, labels, task, tokens = await backend.predict(request.path_params["name"], texts)
        return JSONResponse({"scores": np.asarray(scores, dtype=np.float64).tolist(), "labels": labels,
                             "task": task, "tokens": tokens})

    async def delete(request: Request) -> JSONResponse:
        authorized(request)
        await run_in_threadpool(backend.delete, request.path_params["name"])
        return JSONResponse({"deleted": True})

    async def status(request: Request) -> JSONResponse:
        authorized(request)
        name = request.path_params["name"]
        return JSONResponse({"name": name, "replicas": await run_in_threadpool(backend.replicas, name)})

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def aiaas_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AiaasError)
        return _error(exc)

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("gateway error", exc_info=exc)
        return _error(Unavailable("The serving gateway failed; see its log."))

    return Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Route("/deployments/{name}", deploy, methods=["PUT"]),
            Route("/deployments/{name}", delete, methods=["DELETE"]),
            Route("/deployments/{name}", status, methods=["GET"]),
            Route("/deployments/{name}/predict", predict, methods=["POST"]),
        ],
        exception_handlers={AiaasError: aiaas_error, Exception: unexpected},
    )


class GatewayClient:
    """What the API process uses instead of RayServingBackend: its calls, over HTTP."""

    def __init__(self, base_url: str, master_secret: str, *, timeout_s: float = 120.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport,
                                         headers={"Authorization": f"Bearer {gateway_token(master_secret)}"})

    async def _call(self, method: str, path: str, json: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            resp = await self._client.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise Unavailable(f"The serving gateway is unreachable ({type(exc).__name__}); retry shortly.") from exc
        data = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code >= 400:
            err = data.get("error") or {}
            code = err.get("code") if status_for(str(err.get("code"))) == resp.status_code else "unavailable"
            raise AiaasError(err.get("message") or f"Gateway answered {resp.status_code}.", code=code,
                             param=err.get("param"))
        return data

    async def deploy(self, name: str, artifact_uri: str, min_replicas: int = 1, max_replicas: int = 1) -> None:
        await self._call("PUT", f"/deployments/{name}", {"artifact_uri": artifact_uri,
                                                          "min_replicas": min_replicas, "max_replicas": max_replicas})

    async def predict(self, name: str, texts: list[str]) -> tuple[np.ndarray, list[str], str, int]:
        data = await self._call("POST", f"/deployments/{name}/predict", {"texts": texts})
        scores = np.asarray(data["scores"], dtype=np.float32).reshape(len(texts), -1)
        return scores, list(data["labels"]), str(data["task"]), int(data["tokens"])

    async def delete(self, name: str) -> None:
        await self._call("DELETE", f"/deployments/{name}")

    async def replicas(self, name: str) -> int:
        """Running replicas of the deployment (0 when scaled to zero)."""
        return int((await self._call("GET", f"/deployments/{name}"))["replicas"])

    async def healthy(self) -> bool:
        try:
            return (await self._client.get("/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        await self._client.aclose()
