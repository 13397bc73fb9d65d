"""Deployments served on Ray Serve, reached through the serving gateway (aiaas/cluster/gateway.py).

The API process holds no Ray driver; the gateway runs one application per deployment
(serving/ray_serve.py) whose replicas run the same ONNX runtime as LocalRuntime, so a model
answers the same wherever it runs. Only deployments run here (a `ModelRef` without a
deployment id is a caller's mistake), and only scores: embeddings stay in process.
"""

from __future__ import annotations

from aiaas.cluster.gateway import GatewayClient
from aiaas.core.errors import InvalidRequest
from aiaas.serving.interface import ModelInfo, ModelRef, Outputs, Runtime


class GatewayRuntime(Runtime):
    def __init__(self, client: GatewayClient, *, max_replicas: int) -> None:
        if max_replicas < 1:
            raise ValueError(f"max_replicas must be >= 1, got {max_replicas} (AIAAS_RAY_MAX_REPLICAS)")
        self.client = client
        self.max_replicas = max_replicas

    @staticmethod
    def _name(ref: ModelRef) -> str:
        if ref.deployment_id is None:
            raise ValueError(f"{ref.artifact}: only deployments run on Ray Serve")
        return ref.deployment_id

    async def load(self, ref: ModelRef, *, keep_loaded: bool = False) -> None:
        """Start (or roll) the deployment's Serve application; returns once a replica runs."""
        await self.client.deploy(self._name(ref), ref.artifact, min_replicas=int(keep_loaded),
                                  max_replicas=ref.max_replicas or self.max_replicas)

    async def unload(self, ref: ModelRef) -> None:
        await self.client.delete(self._name(ref))

    async def predict(self, ref: ModelRef, texts: list[str]) -> Outputs:
        scores, labels, task, tokens = await self.client.predict(self._name(ref), texts)
        return Outputs(scores, tokens, ModelInfo(task=task, labels=tuple(labels)))

    async def embed(self, ref: ModelRef, texts: list[str]) -> Outputs:
        raise InvalidRequest("Embeddings of a deployment on Ray Serve are served in process; "
                             "call the model by its id.", param="model")

    async def ready(self, ref: ModelRef) -> bool:
        return await self.client.replicas(self._name(ref)) > 0

    async def healthy(self) -> bool:
        return await self.client.healthy()

    def resident_bytes(self) -> int:
        return 0  # replicas hold their memory on their own nodes

    async def aclose(self) -> None:
        await self.client.aclose()
