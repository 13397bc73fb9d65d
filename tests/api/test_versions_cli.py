"""The CLI's promotion path (versions, alias set, canary, rollback, download) through the SDK, against the
real app (Starlette's TestClient as the SDK's HTTP client)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from aiaas.cli import models_versions
from aiaas.cli.main import app as cli
from aiaas.sdk import Client
from tests.helpers.deployed import export_tiny_classifier, register

V1 = "ft:tiny-bert:org-a:support:ftjob-1"
V2 = "ft:tiny-bert:org-a:support:ftjob-2"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("art"))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_promotion_with_a_canary_and_a_rollback_from_the_cli(app, settings, db, org_a, artifact, monkeypatch,
                                                             tmp_path):
    for model_id in (V1, V2):
        register(settings, db, org_a.id, artifact, model_id=model_id, task="single_label_classification",
                 labels=["negative", "positive"])
    with TestClient(app) as http:
        sdk = Client(base_url="http://testserver", api_key=org_a.key, http_client=http)
        monkeypatch.setattr(models_versions, "sdk_client", lambda *a: sdk)
        monkeypatch.setattr(Client, "__exit__", lambda *a: None)  # the test keeps the client
        run = CliRunner().invoke
        r = run(cli, ["models", "versions", "support"])
        assert r.exit_code == 0, r.output
        assert "support/2" in r.output and "support/1" in r.output
        r = run(cli, ["models", "alias", "set", "support", "production", "1"])
        assert r.exit_code == 0 and "support@production -> 1" in r.output, r.output
        assert sdk.deployments.create("sup", model="support@production")["model"] == V1
        r = run(cli, ["deployments", "update", "sup", "--canary", "support/2=10"])
        assert r.exit_code == 0, r.output
        assert "support@production=90%" in r.output and "support/2=10%" in r.output
        r = run(cli, ["deployments", "update", "sup", "--canary", "support/2=140"])
        assert r.exit_code == 2
        r = run(cli, ["deployments", "rollback", "sup"])
        assert r.exit_code == 0 and "revision 3: support@production=100%" in r.output, r.output
        r = run(cli, ["deployments", "update", "sup", "--model", "support/9"])
        assert r.exit_code == 1 and "traffic.0.model" in r.output, r.output
        r = run(cli, ["models", "download", V2, "--format", "hf", "-o", str(tmp_path / "model")])
        assert r.exit_code == 0, r.output
        assert (tmp_path / "model" / "config.json").exists() and (tmp_path / "model" / "README.md").exists()
