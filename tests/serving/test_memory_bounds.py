"""Memory bounds on the serving side (issue 13, deliverable 9): what is kept per model goes with it, and
pinned models count against the model memory budget (a pinned deploy that cannot fit answers 409)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import httpx
import pytest

from aiaas.core.errors import InsufficientMemory, Unavailable
from aiaas.serving.batcher import MicroBatcher, text_length
from aiaas.serving.cache import ModelCache
from aiaas.serving.runtime import load_predictor
from tests.serving.test_cache import Loader

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_unload_hook_fires_whenever_a_model_leaves():
    async def main():
        clock = Clock()
        cache = ModelCache(Loader({"a": 40, "b": 40, "c": 40, "d": 10, "e": 10}), memory_budget_bytes=100,
                           idle_unload_s=60, clock=clock)
        gone: list[str] = []
        cache.on_unload(gone.append)
        await cache.get("a")
        await cache.get("b")
        await cache.get("c")  # over budget: a (least recently used) is evicted
        assert gone == ["a"]
        cache.evict("b")  # a new version deployed
        assert gone == ["a", "b"]
        await cache.get("d")
        clock.now = 61
        assert sorted(cache.unload_idle()) == ["c", "d"]  # scale to zero
        assert sorted(gone[2:]) == ["c", "d"]
        await cache.get("e")
        await cache.close()
        assert gone[-1] == "e"

    asyncio.run(main())
    with pytest.raises(TypeError):
        ModelCache(Loader(), memory_budget_bytes=1, idle_unload_s=None).on_unload(None)  # type: ignore[arg-type]


def test_a_batcher_kept_per_model_lets_the_model_go_when_it_unloads(single_label):
    """As the inference service keeps one micro-batcher per model: the batcher's function holds the
    predictor (ONNX sessions, tokenizer), so unless the batcher goes with the model, an unloaded model's
    memory is never given back."""
    _, artifact = single_label

    async def main() -> tuple[weakref.ref, dict]:
        clock = Clock()
        cache = ModelCache(lambda key: load_predictor(artifact), memory_budget_bytes=1 << 30, idle_unload_s=60,
                           clock=clock)
        batchers: dict[tuple[str, str], MicroBatcher] = {}

        def drop(key: str) -> None:
            for k in [k for k in batchers if k[0] == key]:
                batchers.pop(k)

        cache.on_unload(drop)
        async with cache.use("m") as predictor:
            batcher = MicroBatcher(lambda texts, p=predictor: p.infer(texts).probabilities.tolist(),
                                   max_batch_size=4, length=text_length)
            batchers[("m", "scores")] = batcher
            assert len(await batcher.submit(["refund please", "it crashed"])) == 2
            ref = weakref.ref(predictor)
        del predictor, batcher
        clock.now = 61
        assert cache.unload_idle() == ["m"]
        await cache.close()
        return ref, batchers

    ref, batchers = asyncio.run(main())
    gc.collect()
    assert batchers == {}
    assert ref() is None  # nothing holds the unloaded predictor any more


def test_pinned_models_count_against_the_budget():
    async def main():
        cache = ModelCache(Loader({"a": 60 * MiB, "b": 50 * MiB, "c": 50 * MiB, "d": 30 * MiB}),
                           memory_budget_bytes=100 * MiB, idle_unload_s=None)
        await cache.pin_within_budget("a")
        await cache.pin_within_budget("a")  # already pinned: nothing changes
        assert cache.stats()["pinned"] == ["a"] and cache.pinned_bytes == 60 * MiB
        with pytest.raises(InsufficientMemory) as err:
            await cache.pin_within_budget("b")
        e = err.value
        assert e.code == "insufficient_memory" and e.status == 409 and e.param == "min_replicas"
        assert "AIAAS_MODEL_MEMORY_BUDGET_MB" in e.message and "60 MiB" in e.message and "100 MiB" in e.message
        assert cache.stats()["pinned"] == ["a"]
        # An unpinned model that cannot fit next to the pinned ones is not loaded at all (it could only
        # run the cache over budget for good) ...
        cache.evict("b")
        with pytest.raises(Unavailable, match="pinned models hold 60 MiB"):
            await cache.get("c")
        assert "c" not in cache and cache.memory_bytes <= 100 * MiB
        # ... one that fits is served, and LRU eviction keeps the total under the budget.
        await cache.get("d")
        assert cache.memory_bytes == 90 * MiB
        # Unpinning gives the room back.
        cache.pin("a", False)
        await cache.pin_within_budget("c")
        assert cache.stats()["pinned"] == ["c"] and cache.memory_bytes <= 100 * MiB
        # A model already loaded (busy, so the cache kept it) cannot be pinned past the budget either.
        cache.pin("c", False)
        async with cache.use("b"):
            await cache.pin_within_budget("a")
            with pytest.raises(InsufficientMemory, match="already use 60 MiB"):
                await cache.pin_within_budget("b")
        assert cache.stats()["pinned"] == ["a"]
        await cache.close()

    asyncio.run(main())


async def test_a_pinned_deploy_that_cannot_fit_answers_409(settings, db, tmp_path):
    """Through the API: two models, a budget that holds one pinned; the second pinned deploy is a 409
    naming the setting, nothing is created, and the same model deploys unpinned."""
    from aiaas.api.app import create_app
    from aiaas.store import tenancy
    from tests.helpers.deployed import export_tiny_classifier, register

    artifact = export_tiny_classifier(tmp_path)
    one = load_predictor(artifact / "onnx").memory_bytes
    budget_mb = (one * 3 // 2) // MiB + 1  # one pinned model fits, two do not
    settings = settings.model_copy(update={"model_memory_budget_mb": budget_mb})
    with db.session() as s:
        org, _, key = tenancy.create_organization(s, "mem-org")
    models = []
    for job in ("ftjob-a", "ftjob-b"):
        models.append(f"ft:tiny-bert:mem-org:x:{job}")
        register(settings, db, org.id, artifact, model_id=models[-1], task="single_label_classification",
                 labels=["negative", "positive"])
    headers = {"Authorization": f"Bearer {key}"}
    app = create_app(settings, db=db, migrate_db=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post("/v1/deployments", headers=headers, json={"name": "a", "model": models[0],
                                                                       "min_replicas": 1})
            assert r.status_code == 201, r.text
            r = await c.post("/v1/deployments", headers=headers, json={"name": "b", "model": models[1],
                                                                       "min_replicas": 1})
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert error["code"] == "insufficient_memory" and error["param"] == "min_replicas"
            assert "AIAAS_MODEL_MEMORY_BUDGET_MB" in error["message"] and f"{budget_mb} MiB" in error["message"]
            assert (await c.get("/v1/deployments/b", headers=headers)).status_code == 404
            r = await c.post("/v1/deployments", headers=headers, json={"name": "b", "model": models[1]})
            assert r.status_code == 201, r.text
            # The pinned one answers; the unpinned one cannot be loaded next to it, and says why.
            r = await c.post("/v1/deployments/a/predict", headers=headers, json={"inputs": ["good"]})
            assert r.status_code == 200, r.text
            r = await c.post("/v1/deployments/b/predict", headers=headers, json={"inputs": ["good"]})
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
