"""The judge behind tests/hostile/audit.sh: reviewed findings pass, new ones and unaudited packages do not."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.hostile import audit_check


def _bandit_report(tmp_path: Path, lines: dict[str, list[str]], results: list[tuple[str, str, int]]) -> dict:
    for name, content in lines.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("\n".join(content) + "\n")
    return {"results": [{"filename": name, "line_number": n, "test_id": test, "issue_severity": "LOW",
                         "issue_text": "x", "code": ""} for test, name, n in results]}


def test_bandit_reviewed_entries_match_by_file_test_and_line_text(tmp_path: Path) -> None:
    report = _bandit_report(
        tmp_path,
        {"aiaas/a.py": ["import subprocess", "x = 1", "subprocess.run(cmd)"]},
        [("B404", "aiaas/a.py", 1), ("B603", "aiaas/a.py", 3)],
    )
    reviewed = [{"test": "B404", "file": "aiaas/a.py", "line": "import subprocess"},
                {"test": "B311", "file": "aiaas/gone.py", "line": "random.random()"}]
    unreviewed, stale = audit_check.check_bandit(report, reviewed, root=tmp_path)
    assert [(f.test, f.line_no) for f in unreviewed] == [("B603", 3)]
    assert [e["file"] for e in stale] == ["aiaas/gone.py"]


def test_pip_audit_distinguishes_vulnerable_accepted_and_unaudited() -> None:
    report = {"dependencies": [
        {"name": "aiaas", "skip_reason": "Dependency not found on PyPI"},
        {"name": "requests", "version": "2.0", "vulns": [{"id": "PYSEC-1", "aliases": ["GHSA-a"],
                                                            "fix_versions": ["2.1"]}]},
        {"name": "idna", "version": "3.0", "vulns": [{"id": "PYSEC-2", "aliases": [], "fix_versions": []}]},
        {"name": "numpy", "skip_reason": "Dependency not found on PyPI"},
        {"name": "six", "version": "1.0", "vulns": []},
    ]}
    policy = {"local_only": ["aiaas"], "ignore": [{"package": "requests", "id": "GHSA-a", "reason": "r"}]}
    vulns, unaudited, audited = audit_check.check_pip_audit(report, policy)
    assert vulns == ["idna 3.0: PYSEC-2 (fixed in: no fix yet)"]
    assert [u.split(":")[0] for u in unaudited] == ["numpy"]
    assert audited == 3


def test_every_reviewed_bandit_entry_says_why() -> None:
    entries = tomllib.loads((audit_check.HERE / "bandit_reviewed.toml").read_text())["finding"]
    assert entries
    for e in entries:
        assert e["test"].startswith("B") and e["file"].startswith("aiaas/") and e["line"], e
        assert len(e["reason"]) > 20 and e["nosec"].startswith(f"# nosec {e['test']}"), e
