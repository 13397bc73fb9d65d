"""Judge bandit and pip-audit JSON reports against the reviewed lists next to this file.

    python -m tests.hostile.audit_check bandit REPORT.json
    python -m tests.hostile.audit_check pip-audit REPORT.json

Exit status: 0 clean; 1 unreviewed findings or known vulnerabilities; 2 the audit could not be
done (pip-audit reached no vulnerability data for packages that are on PyPI).
"""

from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLEAN, FINDINGS, NOT_AUDITED = 0, 1, 2


@dataclass(frozen=True)
class Finding:
    test: str
    file: str
    line_no: int
    line: str
    severity: str
    text: str

    def __str__(self) -> str:
        return f"{self.test} {self.severity} {self.file}:{self.line_no}: {self.text}\n      {self.line.strip()}"


def bandit_findings(report: dict, root: Path = ROOT) -> list[Finding]:
    found = []
    for r in report.get("results", []):
        path = Path(r["filename"])
        rel = path.relative_to(root).as_posix() if path.is_absolute() else path.as_posix()
        try:
            line = (root / rel).read_text().splitlines()[r["line_number"] - 1]
        except (OSError, IndexError):
            line = r.get("code", "")
        found.append(Finding(r["test_id"], rel, r["line_number"], line, r["issue_severity"], r["issue_text"]))
    return found


def check_bandit(report: dict, reviewed: list[dict], root: Path = ROOT) -> tuple[list[Finding], list[dict]]:
    """(unreviewed findings, stale reviewed entries)."""
    findings = bandit_findings(report, root)
    used: set[int] = set()
    unreviewed = []
    for f in findings:
        match = next((i for i, e in enumerate(reviewed)
                      if e["test"] == f.test and e["file"] == f.file and e["line"] in f.line), None)
        if match is None:
            unreviewed.append(f)
        else:
            used.add(match)
    stale = [e for i, e in enumerate(reviewed) if i not in used]
    return unreviewed, stale


def check_pip_audit(report: dict, policy: dict) -> tuple[list[str], list[str], int]:
    """(vulnerabilities not accepted, packages that could not be audited, packages audited)."""
    local_only = {n.lower() for n in policy.get("local_only", [])}
    accepted = {(i["package"].lower(), i["id"]) for i in policy.get("ignore", [])}
    vulns, unaudited, audited = [], [], 0
    for dep in report.get("dependencies", []):
        name = dep["name"].lower()
        if "skip_reason" in dep:
            if name not in local_only:
                unaudited.append(f"{dep['name']}: {dep['skip_reason']}")
            continue
        audited += 1
        for v in dep.get("vulns", []):
            ids = {v["id"], *v.get("aliases", [])}
            if not any((name, i) in accepted for i in ids):
                fix = ", ".join(v.get("fix_versions") or []) or "no fix yet"
                vulns.append(f"{dep['name']} {dep.get('version')}: {v['id']} (fixed in: {fix})")
    return vulns, unaudited, audited


def main(argv: list[str]) -> int:
    kind, path = argv
    report = json.loads(Path(path).read_text())
    if kind == "bandit":
        reviewed = tomllib.loads((HERE / "bandit_reviewed.toml").read_text()).get("finding", [])
        unreviewed, stale = check_bandit(report, reviewed)
        errors = report.get("errors") or []
        total = len(report.get("results", []))
        print(f"bandit: {total} findings outside the global skips, {total - len(unreviewed)} reviewed, "
              f"{len(unreviewed)} unreviewed")
        for e in stale:
            print(f"  stale review entry (fixed or marked nosec? delete it): {e['test']} {e['file']}: {e['line']}")
        for f in unreviewed:
            print(f"  UNREVIEWED {f}")
        for e in errors:
            print(f"  bandit could not scan {e.get('filename')}: {e.get('reason')}")
        return FINDINGS if unreviewed or errors else CLEAN
    if kind == "pip-audit":
        policy = tomllib.loads((HERE / "pip_audit.toml").read_text())
        vulns, unaudited, audited = check_pip_audit(report, policy)
        print(f"pip-audit: {audited} packages audited, {len(unaudited)} could not be looked up, "
              f"{len(vulns)} known vulnerabilities not accepted")
        for v in vulns:
            print(f"  VULNERABLE {v}")
        if unaudited:
            print(f"  NOT AUDITED: the vulnerability service answered nothing for {len(unaudited)} packages, "
                  f"e.g. {unaudited[0]}")
        if vulns:
            return FINDINGS
        return NOT_AUDITED if unaudited else CLEAN
    raise SystemExit(f"unknown report kind {kind!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
