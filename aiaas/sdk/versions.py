"""Registered models, versions, aliases, deployment rollouts and model download (issue 14).

Attached to the clients as `client.registered_models`; like every resource, one implementation for
the sync and async clients."""

from __future__ import annotations

import builtins
from typing import Any
from urllib.parse import quote

from aiaas.sdk.resources import Request, Resource, clean


class RegisteredModels(Resource):
    def list(self) -> Any:
        return self._c.call(Request("GET", "/v1/registered_models"))

    def retrieve(self, name: str) -> Any:
        return self._c.call(Request("GET", f"/v1/registered_models/{name}"))

    def versions(self, name: str) -> Any:
        return self._c.call(Request("GET", f"/v1/registered_models/{name}/versions"))

    def register_checkpoint(self, name: str, checkpoint: str) -> Any:
        """Make a job's checkpoint (`ftckpt-…`, see a job's checkpoints: `registrable`) version N+1 of `name`."""
        return self._c.call(Request("POST", f"/v1/registered_models/{name}/versions",
                                    json={"checkpoint": checkpoint}, idempotent=False))

    def version(self, name: str, version: int) -> Any:
        return self._c.call(Request("GET", f"/v1/registered_models/{name}/versions/{version}"))

    def delete_version(self, name: str, version: int) -> Any:
        return self._c.call(Request("DELETE", f"/v1/registered_models/{name}/versions/{version}"))

    def set_alias(self, name: str, alias: str, version: int) -> Any:
        return self._c.call(Request("PUT", f"/v1/registered_models/{name}/aliases/{alias}",
                                    json={"version": version}))

    def delete_alias(self, name: str, alias: str) -> Any:
        return self._c.call(Request("DELETE", f"/v1/registered_models/{name}/aliases/{alias}"))

    # -- deployments that follow versions ---------------------------------------------------------------
    def update_deployment(self, name: str, *, model: str | None = None, traffic: builtins.list[dict[str, Any]] | None = None,
                          sticky_header: str | None = None, min_replicas: int | None = None,
                          max_replicas: int | None = None, shadow: dict[str, Any] | None = None) -> Any:
        """Change a deployment's model, alias or traffic split (`[{"model": "support/4", "weight": 10}, …]`)."""
        body = clean({"model": model, "traffic": traffic, "sticky_header": sticky_header,
                      "min_replicas": min_replicas, "max_replicas": max_replicas, "shadow": shadow})
        return self._c.call(Request("PATCH", f"/v1/deployments/{name}", json=body, idempotent=False))

    def rollback_deployment(self, name: str, *, revision: int | None = None) -> Any:
        return self._c.call(Request("POST", f"/v1/deployments/{name}/rollback", json=clean({"revision": revision})))

    def deployment_revisions(self, name: str) -> Any:
        return self._c.call(Request("GET", f"/v1/deployments/{name}/revisions"))

    def download(self, model: str, *, format: str = "hf", archive: str = "tar.gz") -> Any:  # noqa: A002
        """The model's archive as bytes (`format`: hf or onnx; `archive`: tar.gz or zip)."""
        return self._c.call(Request("GET", f"/v1/models/{quote(model, safe='/:@')}/content",
                                    params={"format": format, "archive": archive}, raw=True))
