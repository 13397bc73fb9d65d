"""Each attempt of a job works in its own directory, so what a worker writes after losing its lease is garbage.

A job's local files live under `<jobs_dir>/<job id>/attempt-<n>/` (n: the claim's number, its fence
token). A new attempt starts from a copy of the newest earlier attempt's directory (checkpoints
hard-linked: they are written to a temporary directory and renamed, never rewritten in place; other
files copied), then deletes the earlier directories. A worker that was paused past its lease and
resumes therefore writes checkpoints, the trained model and the ONNX export only into its own,
forsaken directory, never into the files the live attempt reads and uploads.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ATTEMPT = re.compile(r"attempt-(\d+)$")
OUTPUTS = ("model", "onnx")  # written by every attempt from its own training; never carried over


def attempt_dir(jobs_dir: Path, job_id: str, attempt: int) -> Path:
    """The attempt's work directory, seeded from the newest earlier attempt's."""
    root = jobs_dir / job_id
    work = root / f"attempt-{attempt}"
    if work.is_dir():
        return work
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    earlier = sorted(
        (int(m.group(1)), p) for p in root.iterdir() if (m := ATTEMPT.match(p.name)) and int(m.group(1)) < attempt
    )
    tmp = root / f".tmp-attempt-{attempt}"
    shutil.rmtree(tmp, ignore_errors=True)
    if earlier:
        _carry(earlier[-1][1], tmp)
    elif any(not p.name.startswith((".tmp-", "attempt-")) for p in root.iterdir()):
        _carry(root, tmp)  # a job started before attempts had directories: its files are at the root
    else:
        tmp.mkdir(mode=0o700)
    os.replace(tmp, work)
    for _, old in earlier:  # their workers are dead or fenced: what they write from now on is not read
        shutil.rmtree(old, ignore_errors=True)
    return work


def _carry(src: Path, dst: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == src
        return {n for n in names if n.startswith((".tmp-", ".old-")) or n in OUTPUTS
                or (top and ATTEMPT.match(n) is not None)}

    def link_or_copy(s: str, d: str) -> object:
        if "checkpoints" in Path(s).relative_to(src).parts:
            try:
                os.link(s, d)
                return d
            except OSError:
                pass
        return shutil.copy2(s, d)

    shutil.copytree(src, dst, ignore=ignore, copy_function=link_or_copy)
    os.chmod(dst, 0o700)
