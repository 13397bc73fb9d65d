"""InferenceService's operations, called directly: check -> charge -> resolve -> run -> settle -> shape -> meter."""

from __future__ import annotations

import numpy as np
import pytest

from aiaas.core.errors import InvalidRequest, NotFound, RateLimited
from aiaas.security.ratelimit import Limits
from aiaas.serving import oip_codec as codec
from aiaas.services.inference import Caller
from aiaas.services.inference.tokens import estimate_tokens
from tests.services.conftest import MODEL

TPM = 1000


def caller_of(world, tpm: int | None = TPM) -> Caller:
    return Caller(world.org_id, world.key_id, Limits(tokens_per_minute=tpm) if tpm else None, {})


def charged(world) -> float:
    """Tokens the limiter holds against the key (the bucket never refills: its clock is frozen)."""
    level = world.limiter._buckets[f"t:{world.key_id}"][1]
    return TPM - level


def metered(world) -> tuple[int, int]:
    bucket = world.usage._pending[(world.org_id, world.key_id, MODEL)]
    return bucket.requests, bucket.input_tokens


async def test_classify_charges_exactly_the_tokens_the_model_read(world):
    texts = ["great service, thank you!!!", "我的包裹还没有到", "terrible experience"]
    caller = caller_of(world)
    answer = await world.service.classify(caller, "svc", texts, top_k=1, deployment_only=True)
    assert answer.model_id == MODEL and len(answer.results) == 3
    assert all(r["label"] in ("negative", "positive") and len(r["scores"]) == 1 for r in answer.results)
    assert answer.tokens != estimate_tokens(texts)  # so the correction below had something to correct
    assert charged(world) == answer.tokens
    assert caller.headers["x-ratelimit-remaining-tokens"] == str(TPM - answer.tokens)
    assert metered(world) == (1, answer.tokens)


async def test_a_refused_charge_never_reaches_the_model(world):
    caller = caller_of(world, tpm=5)
    with pytest.raises(RateLimited):
        await world.service.classify(caller, "svc", ["a fairly long sentence of words"], deployment_only=True)
    assert world.service.local.resident_bytes() == 0  # nothing was loaded
    assert caller.headers["x-ratelimit-limit-tokens"] == "5"
    assert (world.org_id, world.key_id, MODEL) not in world.usage._pending


async def test_inputs_are_checked_before_anything_is_charged(world):
    with pytest.raises(InvalidRequest) as err:
        await world.service.classify(caller_of(world), "svc", ["ok", 3], deployment_only=True)
    assert err.value.param == "inputs.1"
    assert f"t:{world.key_id}" not in world.limiter._buckets


async def test_native_predict_takes_only_deployment_names(world):
    with pytest.raises(NotFound):
        await world.service.classify(caller_of(world), MODEL, ["a"], deployment_only=True)
    answer = await world.service.classify(caller_of(world), MODEL, "a", field="input")  # /v1/classifications
    assert answer.model_id == MODEL and len(answer.results) == 1


async def test_embed_trims_renormalises_and_checks_dimensions(world):
    answer = await world.service.embed(caller_of(world), MODEL, ["a", "b c"], dimensions=8)
    assert answer.results.shape == (2, 8) and answer.results.dtype == np.float32
    assert np.allclose(np.linalg.norm(answer.results, axis=1), 1, atol=1e-5)
    assert charged(world) == answer.tokens
    with pytest.raises(InvalidRequest) as err:
        await world.service.embed(caller_of(world), MODEL, ["a"], dimensions=10_000)
    assert err.value.param == "dimensions"


async def test_infer_tensors_and_per_model_readiness(world):
    service = world.service
    assert await service.ready(world.org_id, "svc") is False  # not loaded before its first request
    texts = np.array([b"great service", "\u4e2d\u6587".encode()], dtype=object)
    request = codec.InferRequest(id="r", inputs=[codec.Tensor("text", codec.BYTES, (2,), texts)],
                                 outputs=[codec.RequestedOutput("scores")], parameters={})
    answer = await service.infer_tensors(caller_of(world), "svc", "1", request)
    assert [t.name for t in answer.results] == ["scores"] and answer.results[0].data.shape == (2, 2)
    assert charged(world) == answer.tokens and metered(world) == (1, answer.tokens)
    assert await service.ready(world.org_id, "svc") is True
    assert await service.ready(world.org_id, MODEL, "1") is True
    with pytest.raises(NotFound):
        await service.ready(world.org_id, "svc", "2")
    unknown = codec.InferRequest(id="r", inputs=request.inputs, outputs=[codec.RequestedOutput("nope")],
                                 parameters={})
    with pytest.raises(InvalidRequest, match="nope"):
        await service.infer_tensors(caller_of(world), "svc", None, unknown)


async def test_deleting_a_model_unloads_it(world):
    await world.service.classify(caller_of(world), MODEL, ["a"])
    assert world.service.local.resident_bytes() > 0
    world.service.model_deleted(world.org_id, MODEL, world.uri)
    assert world.service.local.resident_bytes() == 0
