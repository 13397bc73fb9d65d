"""The CLI for scripts, in process: --json and -q on the commands that print objects, `jobs wait` exit codes,
the `deployments` group, exit codes for usage errors and an unreachable server.

The real CLI (typer's runner), the real SDK and the real app over one TestClient session (one event loop, as
the app's inference batchers need); tests/cli/test_commands.py runs the same commands as processes.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from aiaas.cli import common
from aiaas.cli.main import app as cli_app
from aiaas.sdk import Client
from aiaas.store.models import FineTuningJob
from tests.api.conftest import Org, app, make_org  # noqa: F401 - fixtures used by name
from tests.helpers.datasets import toy_csv
from tests.helpers.deployed import export_tiny_classifier, register

MODEL = "ft:tiny-bert:org-a:cli:ftjob-9"
CLI_MODULES = ("aiaas.cli.workflow", "aiaas.cli.deployments", "aiaas.cli.keys", "aiaas.cli.usage")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aiaas.db'}"


@pytest.fixture
def org_a(db) -> Org:
    return make_org(db, "org-a")


class _Session(Client):
    """The fixture's client: each command's `with` block must not close the shared session."""

    def close(self) -> None:
        pass


@pytest.fixture
def run(app, org_a, monkeypatch, tmp_path):  # noqa: F811 - `app` is the imported fixture
    import importlib

    from starlette.testclient import TestClient

    with TestClient(app, base_url="http://test") as http:
        client = _Session("http://test", org_a.key, http_client=http, max_retries=0)
        for name in CLI_MODULES:
            monkeypatch.setattr(importlib.import_module(name), "sdk_client", lambda *_a: client)
        runner = CliRunner()

        def invoke(*args: str, code: int = 0):
            result = runner.invoke(cli_app, list(args), env={"COLUMNS": "200"})
            assert result.exit_code == code, (args, result.output, result.exception)
            return result

        yield invoke


def lines(result) -> list[str]:
    return result.stdout.splitlines()


def upload(run, tmp_path: Path) -> str:
    data = tmp_path / "train.csv"
    data.write_bytes(toy_csv(5))
    out = lines(run("files", "upload", str(data), "-q"))
    assert len(out) == 1 and re.fullmatch(r"file-\S+", out[0]), out  # the id, nothing else
    return out[0]


def test_quiet_prints_only_ids_and_json_the_objects(run, tmp_path: Path) -> None:
    file_id = upload(run, tmp_path)
    assert lines(run("files", "list", "-q")) == [file_id]
    listed = json.loads(run("files", "list", "--json").stdout)
    assert [f["id"] for f in listed] == [file_id] and listed[0]["summary"]["rows"] == 10

    job_id = lines(run("jobs", "create", file_id, "--model", "tfidf-linear", "--quiet"))
    assert len(job_id) == 1 and job_id[0].startswith("ftjob-")
    job_id = job_id[0]
    assert lines(run("jobs", "list", "-q")) == [job_id]
    assert json.loads(run("jobs", "list", "--json").stdout)[0]["id"] == job_id
    assert json.loads(run("jobs", "get", job_id).stdout)["id"] == job_id
    assert lines(run("jobs", "get", job_id, "-q")) == []  # no fine-tuned model yet
    events = json.loads(run("jobs", "events", job_id, "--json").stdout)
    assert events and all(e["id"] for e in events)
    assert lines(run("jobs", "events", job_id, "-q")) == [e["id"] for e in events]
    assert events == sorted(events, key=lambda e: e["created_at"])  # oldest first, as in the text view
    assert lines(run("jobs", "cancel", job_id, "-q")) == [job_id]
    streamed = [json.loads(line) for line in lines(run("jobs", "events", job_id, "--follow", "--json"))]
    assert [e["id"] for e in streamed[:len(events)]] == [e["id"] for e in events]  # one JSON event per line
    assert "cancel" in streamed[-1]["message"].lower()  # the stream ended with the job

    models = lines(run("models", "list", "-q"))
    assert "tfidf-linear" in models and all(" " not in m for m in models)
    assert {m["id"] for m in json.loads(run("models", "list", "--json").stdout)} == set(models)

    key = lines(run("keys", "create", "ci", "-s", "read", "-q"))
    assert len(key) == 1 and key[0].startswith("aiaas_sk_")
    key_ids = lines(run("keys", "list", "-q"))
    assert len(key_ids) == 2 and all(k.startswith("key-") for k in key_ids)
    made = json.loads(run("keys", "create", "ci2", "--json").stdout)
    assert made["key"].startswith("aiaas_sk_") and made["scopes"] == ["read", "write"]
    revoked = json.loads(run("keys", "revoke", made["id"], "--json").stdout)
    assert revoked["id"] == made["id"] and revoked["revoked_at"]

    assert json.loads(run("usage", "--json").stdout)["object"] == "usage"

    both = run("files", "list", "--json", "-q", code=2)
    assert "--json and --quiet exclude each other" in both.output


def _end(db, job_id: str, status: str, **values) -> None:
    """Stand in for a worker ending the job (the wait loop is what is tested here)."""
    with db.session() as s:
        s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id)
                  .values(status=status, finished_at=int(time.time()), **values))


@pytest.mark.parametrize(
    ("status", "code", "values"),
    [
        ("succeeded", 0, {"fine_tuned_model": "ft:tfidf-linear:org-a::ftjob-x"}),
        ("failed", common.EXIT_JOB_FAILED, {"error": {"code": "invalid_file", "message": "no rows", "param": None}}),
        ("cancelled", common.EXIT_JOB_CANCELLED, {}),
    ],
)
def test_jobs_wait_exits_with_the_final_status(run, db, tmp_path: Path, status, code, values) -> None:
    job_id = lines(run("jobs", "create", upload(run, tmp_path), "--model", "tfidf-linear", "-q"))[0]
    timed_out = run("jobs", "wait", job_id, "--timeout", "0.3", "--interval", "0.1", code=common.EXIT_TIMEOUT)
    assert "is still validating_files after 0.3 s" in timed_out.output
    _end(db, job_id, status, **values)
    quiet = run("jobs", "wait", job_id, "-q", code=code)
    assert lines(quiet) == ([values["fine_tuned_model"]] if status == "succeeded" else [])
    shown = json.loads(run("jobs", "wait", job_id, "--json", code=code).stdout)
    assert shown["status"] == status
    if status == "failed":
        assert "invalid_file: no rows" in run("jobs", "wait", job_id, code=code).output


def test_jobs_wait_follows_a_job_until_it_ends(run, db, tmp_path: Path) -> None:
    """The status changes while `jobs wait` is polling (a thread ends the job 0.5 s in)."""
    import threading

    job_id = lines(run("jobs", "create", upload(run, tmp_path), "--model", "tfidf-linear", "-q"))[0]
    ender = threading.Timer(0.5, _end, args=(db, job_id, "succeeded"), kwargs={"fine_tuned_model": "ft:m"})
    ender.start()
    t0 = time.monotonic()
    try:
        out = run("jobs", "wait", job_id, "--interval", "0.1", "--timeout", "30")
    finally:
        ender.cancel()
    assert f"{job_id} succeeded: ft:m" in out.output and time.monotonic() - t0 >= 0.5


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("cli-art"))


def test_deployments_group_and_the_deploy_alias(run, settings, db, org_a, artifact) -> None:
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    assert lines(run("deployments", "create", MODEL, "--name", "sent", "-q")) == ["sent"]
    assert "deployment alias serves " + MODEL in run("deploy", MODEL, "--name", "alias").output
    assert sorted(lines(run("deployments", "list", "-q"))) == ["alias", "sent"]
    listed = json.loads(run("deployments", "list", "--json").stdout)
    assert {d["model"] for d in listed} == {MODEL}
    got = json.loads(run("deployments", "get", "sent").stdout)
    assert got["name"] == "sent" and lines(run("deployments", "get", "sent", "-q")) == [got["id"]]
    table = run("deployments", "list").output
    assert "sent" in table and MODEL in table

    answers = lines(run("predict", "sent", "great service", "app crashes", "-q"))
    assert len(answers) == 2 and set(answers) <= {"negative", "positive"}
    full = json.loads(run("predict", "sent", "great service", "--json").stdout)
    assert full["deployment"] == "sent" and full["data"][0]["label"] == answers[0]

    assert lines(run("deployments", "delete", "sent", "-q")) == [got["id"]]
    assert "deleted deployment alias" in run("deployments", "delete", "alias").output
    missing = run("deployments", "get", "sent", code=common.EXIT_ERROR)
    assert "not_found" in missing.output


def test_an_unreachable_server_has_its_own_exit_code(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    result = CliRunner().invoke(cli_app, ["files", "list", "--base-url", f"http://127.0.0.1:{port}",
                                          "--api-key", "aiaas_sk_x"])
    assert result.exit_code == common.EXIT_UNREACHABLE, result.output
    assert "connection_error" in result.output and "Traceback" not in result.output


def test_every_command_shares_one_default_data_dir(monkeypatch) -> None:
    """init, serve, quickstart and the rest resolve the same directory when neither flag nor env names one."""
    import typer.main

    from aiaas.core.settings import Settings

    monkeypatch.delenv("AIAAS_DATA_DIR", raising=False)
    assert Settings().data_dir == common.DEFAULT_DATA_DIR == Path.home() / ".aiaas"
    root = typer.main.get_command(cli_app)
    seen = []

    def walk(cmd, path: str) -> None:
        for param in cmd.params:
            if param.name == "data_dir":
                seen.append(path)
                # None: the settings' default (~/.aiaas); quickstart names it itself.
                assert param.default in (None, common.DEFAULT_DATA_DIR), (path, param.default)
                assert "AIAAS_DATA_DIR" in (param.envvar or ""), path
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(root, "aiaas")
    assert {"aiaas init", "aiaas serve", "aiaas quickstart", "aiaas db upgrade"} <= set(seen), seen


def test_output_helpers_turn_results_into_plain_json(capsys) -> None:
    from aiaas.sdk.types import Deployment

    d = Deployment(id="dep-1", name="a", model="m", created_at=1, extra_field=[1])
    common.print_json([d, {"nested": d}])
    out = json.loads(capsys.readouterr().out)
    assert out[0]["id"] == "dep-1" and out[0]["extra_field"] == [1] and out[1]["nested"]["name"] == "a"


def test_upload_as_json(run, tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_bytes(toy_csv(5))
    f = json.loads(run("files", "upload", str(data), "--json").stdout)
    assert f["object"] == "file" and f["bytes"] == len(toy_csv(5))
