"""Real clients against a real server: tritonclient (binary on and off) and the openai SDK's embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from aiaas.core.settings import Settings
from aiaas.services import authn
from aiaas.store.db import Database
from tests.e2e.server import base_env, init, start_server
from tests.helpers.deployed import export_tiny_classifier, register
from tests.helpers.tiny_bert import build_tiny_bert

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODEL = "ft:tiny-bert:default:clients:ftjob-3"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clients")
    data = tmp / "data"
    build_tiny_bert(data / "base_models" / "tiny-bert")
    env = base_env(data)
    key = init(env)
    settings = Settings(data_dir=data)
    db = Database(settings.sqlalchemy_url)
    with db.session() as s:
        org_id = authn.authenticate(s, key).org_id
    register(settings, db, org_id, export_tiny_classifier(tmp), model_id=MODEL,
             task="single_label_classification", labels=["negative", "positive"])
    db.dispose()
    srv = start_server(env, tmp)
    srv.key = key  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http(server, binary):
    tritonclient = pytest.importorskip("tritonclient.http")
    host = server.base_url.removeprefix("http://")
    auth = {"Authorization": f"Bearer {server.key}"}
    with tritonclient.InferenceServerClient(url=host) as client:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_model_metadata(MODEL, headers=auth)
        assert meta["inputs"][0]["name"] == "text"
        texts = np.array([b"great service thank you", b"terrible experience", b"x"], dtype=object)
        inp = tritonclient.InferInput("text", [3], "BYTES")
        inp.set_data_from_numpy(texts, binary_data=binary)
        outs = [tritonclient.InferRequestedOutput("label", binary_data=binary),
                tritonclient.InferRequestedOutput("scores", binary_data=binary)]
        result = client.infer(MODEL, [inp], outputs=outs, headers=auth)
        labels = result.as_numpy("label")
        scores = result.as_numpy("scores")
        assert labels.shape == (3,) and {x.decode() if isinstance(x, bytes) else x for x in labels} <= {
            "negative", "positive"}
        assert scores.shape == (3, 2) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
        # Ready once loaded (by the request above; tests/api/test_oip.py checks "not ready" before it).
        assert client.is_model_ready(MODEL, headers=auth)
        assert not client.is_model_ready("no-such-model", headers=auth)
        # Default settings of the client (binary outputs, no explicit outputs list).
        default = client.infer(MODEL, [inp], headers=auth)
        assert np.allclose(default.as_numpy("scores"), scores, atol=1e-6)
        with pytest.raises(Exception) as err:  # noqa: B017 - tritonclient raises its own InferenceServerException
            client.infer("no-such-model", [inp], headers=auth)
        assert "no-such-model" in str(err.value)


def test_openai_embeddings(server):
    openai = pytest.importorskip("openai")
    oa = openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.key, max_retries=0)
    # The SDK asks for base64 by default and decodes it.
    out = oa.embeddings.create(model=MODEL, input=["great service", "app crashes"])
    vecs = np.array([d.embedding for d in out.data])
    assert vecs.shape == (2, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert out.usage.prompt_tokens > 0 and out.model == MODEL
    floats = oa.embeddings.create(model=MODEL, input="great service", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vecs[0], atol=1e-5)
    # A base model serves embeddings too (exported on first use).
    base = oa.embeddings.create(model="tiny-bert", input="hello there")
    assert len(base.data[0].embedding) == 32
    with pytest.raises(openai.NotFoundError):
        oa.embeddings.create(model="ft:missing", input="x")
