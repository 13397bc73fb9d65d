"""Wire shapes shared by the API and the SDK: the list envelope, error and delete bodies, strict request
models, and round trips (what the server dumps, a client parses back to the same thing)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from aiaas.protocol.common import Deleted, ErrorResponse, StrictModel, list_response
from aiaas.protocol.files import FilePublic, file_public
from aiaas.protocol.inference import DeploymentCreate, PredictRequest
from aiaas.protocol.jobs import JobCreate
from aiaas.protocol.keys import ApiKeyCreate, ApiKeyCreated, OrganizationPublic


def _through_json(model: BaseModel) -> dict[str, Any]:
    """What a client receives: the model as the server serialises it, parsed from bytes."""
    result: dict[str, Any] = json.loads(model.model_dump_json())
    return result


def test_the_list_envelope_names_its_first_and_last_ids() -> None:
    items = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    assert list_response(items, has_more=True) == {"object": "list", "data": items, "has_more": True,
                                                   "first_id": "a", "last_id": "c"}


def test_an_empty_list_has_no_first_or_last_id() -> None:
    assert list_response([], has_more=False) == {"object": "list", "data": [], "has_more": False,
                                                 "first_id": None, "last_id": None}


def test_the_error_body_round_trips_in_the_openai_shape() -> None:
    body = {"error": {"message": "No file with id 'f'.", "type": "not_found_error", "code": "not_found",
                      "param": "file_id", "request_id": "req_1"}}
    parsed = ErrorResponse.model_validate(body)
    assert _through_json(parsed) == body
    assert ErrorResponse.model_validate({"error": {"message": "m", "type": "t", "code": None}}).error.param is None


def test_the_delete_answer() -> None:
    assert _through_json(Deleted(id="file-1", object="file")) == {"id": "file-1", "object": "file", "deleted": True}


@pytest.mark.parametrize("model, body", [
    (PredictRequest, {"inputs": ["hi"], "topk": 1}),
    (DeploymentCreate, {"name": "d", "model": "m", "replicas": 1}),
    (JobCreate, {"model": "m", "training_file": "f", "epochs": 3}),
    (ApiKeyCreate, {"name": "k", "admin": True}),
])
def test_request_models_refuse_unknown_fields_by_name(model: type[StrictModel], body: dict[str, Any]) -> None:
    unknown = next(k for k in body if k not in model.model_fields)
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    assert info.value.errors()[0]["type"] == "extra_forbidden" and info.value.errors()[0]["loc"] == (unknown,)


@pytest.mark.parametrize("body", [
    {"inputs": ["fine", "bad\x00"]},
    {"inputs": ["\x00"], "top_k": 1},
])
def test_text_with_nul_characters_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PredictRequest.model_validate(body)


def test_nul_inside_nested_values_is_refused() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        JobCreate.model_validate({"model": "m", "training_file": "f", "metadata": {"k": "v\x00"}})


def test_key_scopes_default_to_read_write_and_are_deduplicated() -> None:
    assert ApiKeyCreate(name="k").scopes == ["read", "write"]
    assert ApiKeyCreate.model_validate({"name": "k", "scopes": ["write", "infer", "write"]}).scopes == ["infer", "write"]
    for scopes in ([], ["superuser"]):
        with pytest.raises(ValidationError):
            ApiKeyCreate.model_validate({"name": "k", "scopes": scopes})


def test_a_created_key_and_an_organisation_round_trip() -> None:
    created = ApiKeyCreated(id="key-1", name="ci", prefix="aiaas_sk_ab", scopes=["infer"], created_at=1,
                            key="aiaas_sk_secret")
    wire = _through_json(created)
    assert wire["object"] == "api_key" and wire["key"] == "aiaas_sk_secret" and wire["expires_at"] is None
    assert ApiKeyCreated.model_validate(wire) == created
    org = OrganizationPublic(id="org-1", name="acme", created_at=5, settings={"quota_deployments": 3})
    assert OrganizationPublic.model_validate(_through_json(org)) == org


def test_a_file_row_becomes_the_public_file_shape() -> None:
    row = SimpleNamespace(id="file-1", bytes=12, created_at=7, filename="t.csv", purpose="fine-tune",
                          status="processed", summary={"rows": 2, "pii": {"policy": "allow"}})
    public = file_public(row)
    assert public["object"] == "file" and public["status_details"] is None
    assert _through_json(FilePublic.model_validate(public)) == public
    assert file_public(SimpleNamespace(**{**vars(row), "summary": {}}))["summary"] is None


def test_a_job_request_round_trips_with_its_defaults_and_extensions() -> None:
    body = {"model": "minilm-l6", "training_file": "file-1", "suffix": "v1", "seed": 42,
            "metadata": {"team": "search"}, "method": {"type": "supervised",
                                                       "supervised": {"hyperparameters": {"n_epochs": 2}}},
            "task": "multi_label_classification", "text_column": "body", "label_column": "tags",
            "preprocessing": {"lowercase": True, "dedupe": False}}
    job = JobCreate.model_validate(body)
    again = JobCreate.model_validate(_through_json(job))
    assert again == job
    assert again.preprocessing.strip is True and again.preprocessing.dedupe is False  # defaults kept
    assert _through_json(again)["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
