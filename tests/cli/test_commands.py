"""The `aiaas` command as a user runs it: real processes against a real server (SQLite, one training worker)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import AIAAS, Server, base_env, init, start_server
from tests.helpers.datasets import toy_rows

pytestmark = pytest.mark.e2e


class Cli:
    def __init__(self, server: Server, env: dict[str, str], admin_key: str) -> None:
        self.server = server
        # A wide terminal, so rich tables do not wrap ids; the key and URL as a user exports them.
        self.env = env | {"AIAAS_BASE_URL": server.base_url, "AIAAS_API_KEY": admin_key, "COLUMNS": "200"}

    def run(self, *args: str, ok: bool = True, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(AIAAS + list(args), env=self.env | env, capture_output=True, text=True, timeout=timeout)
        if ok:
            assert out.returncode == 0, (args, out.stdout, out.stderr, self.server.logs()[-3000:])
        return out


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    root = tmp_path_factory.mktemp("cli")
    env = base_env(root / "data")
    admin_key = init(env)
    server = start_server(env, root, job_workers=1)
    try:
        yield Cli(server, env, admin_key)
    finally:
        server.stop()


def _csv_with_an_email(path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("text", "label"))
    rows = toy_rows(12, seed=3)
    rows[0] = ("great service, write to jane.doe@example.com", "positive")
    writer.writerows(rows)
    path.write_text(buf.getvalue())
    return path


@pytest.mark.slow
def test_upload_train_deploy_and_predict_from_the_command_line(cli: Cli, tmp_path: Path) -> None:
    data = _csv_with_an_email(tmp_path / "reviews.csv")
    up = cli.run("files", "upload", str(data), "--pii-policy", "redact").stdout
    file_id = re.search(r"as (file-\S+):", up)
    assert file_id, up
    assert "PII (redact): email 1 in 1 rows; redacted 1 values" in up, up
    assert file_id.group(1) in cli.run("files", "list").stdout

    made = cli.run("jobs", "create", file_id.group(1), "--model", "tfidf-linear", "--seed", "1").stdout
    job_id = re.search(r"job (\S+) ", made)
    assert job_id, made
    cli.run("jobs", "events", job_id.group(1), "--follow", timeout=240)  # returns when the job ends
    job = json.loads(cli.run("jobs", "get", job_id.group(1)).stdout)
    assert job["status"] == "succeeded", job
    model = job["fine_tuned_model"]
    assert cli.run("jobs", "wait", job_id.group(1), "-q").stdout.split() == [model]  # exit 0: it succeeded
    assert model in cli.run("models", "list").stdout

    assert "deployment cli-demo serves" in cli.run("deploy", model, "--name", "cli-demo").stdout
    assert cli.run("deployments", "list", "-q").stdout.split() == ["cli-demo"]
    said = cli.run("predict", "cli-demo", "great service thank you", "my card was charged twice").stdout
    lines = [line for line in said.splitlines() if "<-" in line]
    assert len(lines) == 2, said
    assert lines[0].startswith("positive (") and lines[0].endswith("<- great service thank you"), said
    assert lines[1].startswith("negative ("), said

    # Usage is metered in memory and written about every second (AIAAS_USAGE_FLUSH_SECONDS).
    deadline = time.monotonic() + 30
    while True:
        report = json.loads(cli.run("usage", "--json", "--group-by", "model").stdout)
        if report["total"]["requests"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert report["total"]["requests"] == 1 and report["total"]["input_tokens"] > 0, report
    assert [item["model"] for item in report["data"] if item["requests"]] == [model], report


def test_errors_are_one_line_with_the_code_and_no_traceback(cli: Cli, tmp_path: Path) -> None:
    missing = cli.run("jobs", "get", "ftjob-missing", ok=False)
    assert missing.returncode == 1 and "error not_found:" in missing.stderr and "Traceback" not in missing.stderr

    refused = cli.run("files", "upload", str(_csv_with_an_email(tmp_path / "pii.csv")), "--pii-policy", "reject",
                      ok=False)
    assert refused.returncode == 1 and "pii_detected" in refused.stderr and "jane.doe" not in refused.stderr

    no_key = cli.run("files", "list", ok=False, AIAAS_API_KEY="")
    assert no_key.returncode == 2 and "set AIAAS_API_KEY" in no_key.stderr

    bad_choice = cli.run("files", "upload", str(tmp_path / "pii.csv"), "--pii-policy", "keep", ok=False)
    assert bad_choice.returncode == 2 and "allow" in bad_choice.stderr and "redact" in bad_choice.stderr

    bad_group = cli.run("usage", "--group-by", "week", ok=False)
    assert bad_group.returncode == 2 and "--group-by must be day, model or key" in bad_group.stderr


def test_keys_made_on_the_command_line_work_with_their_scopes(cli: Cli) -> None:
    made = cli.run("keys", "create", "reader", "-s", "read").stdout
    key = next(word for word in made.split() if word.startswith("aiaas_sk_"))
    assert cli.run("files", "list", AIAAS_API_KEY=key).returncode == 0
    denied = cli.run("keys", "create", "escalate", AIAAS_API_KEY=key, ok=False)
    assert denied.returncode == 1 and "insufficient_scope" in denied.stderr
