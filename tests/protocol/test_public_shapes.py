"""Public shapes: each resource's row -> JSON mapping has one home, in aiaas.protocol, and its
output is pinned byte for byte (clients parse these)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from aiaas.protocol import audit, files, inference, jobs, keys, models

ROOT = Path(__file__).resolve().parents[2] / "aiaas"


def _dump(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_no_public_shape_is_defined_outside_protocol() -> None:
    found = []
    for path in ROOT.rglob("*.py"):
        if path.parent.name != "protocol":
            for match in re.finditer(r"^\s*def (\w*_public)\(", path.read_text(), re.MULTILINE):
                found.append(f"{path.relative_to(ROOT)}: {match.group(1)}")
    assert found == []


def test_key_and_organization() -> None:
    row = SimpleNamespace(
        id="key-1",
        name="ci",
        prefix="aiaas_sk_ab",
        scopes=("read", "write"),
        created_at=5,
        expires_at=None,
        revoked_at=7,
        last_used_at=6,
        org_id="org-1",
        settings=None,
    )
    assert _dump(keys.key_public(row)) == (
        '{"id":"key-1","object":"api_key","name":"ci","prefix":"aiaas_sk_ab","scopes":["read","write"],'
        '"created_at":5,"expires_at":null,"revoked_at":7,"last_used_at":6}'
    )
    assert _dump(keys.organization_public(row)) == '{"id":"key-1","name":"ci","created_at":5,"settings":{}}'


def test_deployment() -> None:
    row = SimpleNamespace(
        id="dep-1", name="support", model="ft:x", min_replicas=1, max_replicas=2, created_at=1, updated_at=2
    )
    assert _dump(inference.deployment_public(row)) == (
        '{"id":"dep-1","object":"deployment","name":"support","model":"ft:x","min_replicas":1,'
        '"max_replicas":2,"created_at":1,"updated_at":2}'
    )


def test_models_base_models_and_families() -> None:
    row = SimpleNamespace(
        id="ft:a",
        created_at=3,
        org_id="org-1",
        task="regression",
        base_model="minilm-l6",
        lineage={"family": "tfidf-linear"},
        job_id="ftjob-1",
        card={"labels": ["x"]},
    )
    assert _dump(models.model_public(row)) == (
        '{"id":"ft:a","object":"model","created":3,"owned_by":"org-1","task":"regression",'
        '"base_model":"minilm-l6","family":"tfidf-linear","fine_tuning_job":"ftjob-1","labels":["x"],'
        '"card":{"labels":["x"]}}'
    )
    row.lineage, row.card = None, None
    assert models.model_public(row)["family"] == "transformer" and models.model_public(row)["labels"] is None
    assert _dump(models.base_model_public("minilm-l6")) == (
        '{"id":"minilm-l6","object":"model","created":0,"owned_by":"aiaas","task":"feature-extraction",'
        '"family":"transformer"}'
    )
    assert models.base_model_public("m", {"size": 1})["details"] == {"size": 1}
    assert _dump(models.family_public({"id": "auto", "family": "auto", "description": "d"})) == (
        '{"id":"auto","object":"model","created":0,"owned_by":"aiaas","task":null,"family":"auto",'
        '"details":{"description":"d"}}'
    )


def test_audit_record() -> None:
    row = SimpleNamespace(
        id="log-1",
        created_at=9,
        action="api_key.created",
        actor_key_id="key-1",
        target_type="api_key",
        target_id=None,
        request_id="req",
        client_ip="::1",
        details=None,
    )
    assert _dump(audit.log_public(row)) == (
        '{"id":"log-1","object":"audit_log","created_at":9,"action":"api_key.created",'
        '"actor":{"type":"api_key","id":"key-1"},"target":null,"request_id":"req","client_ip":"::1",'
        '"details":{}}'
    )


def test_file_and_job_shapes_keep_their_keys() -> None:
    f = SimpleNamespace(
        id="file-1",
        bytes=10,
        created_at=1,
        filename="a.csv",
        purpose="fine-tune",
        status="processed",
        summary={},
    )
    assert list(files.file_public(f)) == [
        "id",
        "object",
        "bytes",
        "created_at",
        "filename",
        "purpose",
        "status",
        "status_details",
        "summary",
    ]
    ckpt = SimpleNamespace(id="ck-1", created_at=2, job_id="ftjob-1", step=4, metrics={"loss": 0.5})
    assert jobs.checkpoint_public(ckpt, None)["fine_tuned_model_checkpoint"] == "ftjob-1:ckpt-step-4"
    assert jobs.checkpoint_public(ckpt, "ft:m")["metrics"] == {"step": 4, "loss": 0.5}
