"""Pickles are never unpickled: not as a base model's weights, not from a job's checkpoint directory.

Every malicious file here is a real torch.save() whose unpickling runs code that creates a
marker file; a control test shows the payload does fire when loaded unsafely. Base models
are named through the API like a user would; checkpoints are planted in
`<data_dir>/jobs/<job_id>/checkpoints/step-N/` before a worker resumes the job.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import shutil
from pathlib import Path

import pytest

from tests.helpers.datasets import toy_csv
from tests.hostile.conftest import SQLITE_ONLY

COPIED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_evil_pickle(path: Path, marker: Path) -> Path:
    """torch.save() a state dict whose unpickling executes code that creates `marker`."""
    import torch

    class Payload:
        def __reduce__(self):  # what pickle calls: the callable and its arguments run on load
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, path)
    return path


def install_evil_base(tiny_base: Path, name: str, marker: Path, *, keep_safetensors: str | None = None) -> Path:
    """A base-model directory next to tiny-bert: its config and tokenizer, pickle weights.

    keep_safetensors: None (no safetensors at all), "root" (real weights beside the pickle),
    or a sub-directory name to hide the real weights in (the directory scan finds them there,
    transformers does not).
    """
    target = tiny_base.parent / name
    target.mkdir()
    for f in COPIED_FILES:
        if (tiny_base / f).exists():
            shutil.copy(tiny_base / f, target / f)
    write_evil_pickle(target / "pytorch_model.bin", marker)
    if keep_safetensors == "root":
        shutil.copy(tiny_base / "model.safetensors", target / "model.safetensors")
    elif keep_safetensors:
        (target / keep_safetensors).mkdir()
        shutil.copy(tiny_base / "model.safetensors", target / keep_safetensors / "model.safetensors")
    return target


async def upload_toy(client) -> str:
    resp = await client.post("/v1/files", files={"file": ("train.csv", toy_csv(10))}, data={"purpose": "fine-tune"})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


async def run_worker(settings) -> str | None:
    from aiaas.jobs.worker import Worker

    def work() -> str | None:
        with Worker(settings) as w:
            return w.run_once()

    return await asyncio.to_thread(work)


JOB = {"hyperparameters": {"n_epochs": 2, "batch_size": 8}, "seed": 7}


def test_payload_is_armed(tmp_path: Path) -> None:
    """Control: the same construction does run its code when loaded the unsafe way."""
    import torch

    marker = tmp_path / "fired"
    evil = write_evil_pickle(tmp_path / "evil.bin", marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(evil, weights_only=True)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # nosec B614 - the point: prove the payload is live
    assert marker.exists()


@SQLITE_ONLY
async def test_pickle_only_base_model_is_refused(client, settings, tiny_base, tmp_path: Path) -> None:
    marker = tmp_path / "pwned-base"
    install_evil_base(tiny_base, "evil", marker)
    file_id = await upload_toy(client)

    resp = await client.post("/v1/fine_tuning/jobs", json={"model": "evil", "training_file": file_id, **JOB})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == "model" and "pickle" in err["message"] and "safetensors" in err["message"]
    listed = (await client.get("/v1/models")).json()["data"]
    assert "evil" not in {m["id"] for m in listed}
    assert (await client.get("/v1/models/evil")).status_code == 404
    emb = await client.post("/v1/embeddings", json={"model": "evil", "input": ["hello"]})
    assert 400 <= emb.status_code < 500, emb.text
    assert await run_worker(settings) is None  # nothing was queued

    # Swapped after the job was accepted: the worker checks the directory again and refuses it.
    swap = tiny_base.parent / "swap"
    shutil.copytree(tiny_base, swap)
    accepted = await client.post("/v1/fine_tuning/jobs", json={"model": "swap", "training_file": file_id, **JOB})
    assert accepted.status_code == 200, accepted.text
    (swap / "model.safetensors").unlink()
    write_evil_pickle(swap / "pytorch_model.bin", marker)
    assert await run_worker(settings) == "failed"
    job = (await client.get(f"/v1/fine_tuning/jobs/{accepted.json()['id']}")).json()
    assert job["error"]["param"] == "model" and "pickle" in job["error"]["message"], job["error"]
    assert not marker.exists()


@SQLITE_ONLY
@pytest.mark.slow
async def test_hidden_safetensors_do_not_unlock_the_pickle(client, settings, tiny_base, tmp_path: Path) -> None:
    """Real weights in a sub-directory satisfy a recursive scan, but not the loader: it must refuse the
    pickle beside them rather than fall back to it, in training and in the base-model ONNX export."""
    marker = tmp_path / "pwned-nested"
    install_evil_base(tiny_base, "evil-nested", marker, keep_safetensors="onnx")
    file_id = await upload_toy(client)

    resp = await client.post("/v1/fine_tuning/jobs",
                             json={"model": "evil-nested", "training_file": file_id, **JOB})
    if resp.status_code == 200:
        assert await run_worker(settings) == "failed"
        job = (await client.get(f"/v1/fine_tuning/jobs/{resp.json()['id']}")).json()
        assert job["status"] == "failed" and job["error"]["message"], job
    else:
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "model", resp.text
    # Serving a base model exports it to ONNX in a subprocess that loads it with transformers.
    # Refusing is right (4xx: not a usable base model; or 503 'unavailable'); a 500 is not.
    emb = await client.post("/v1/embeddings", json={"model": "evil-nested", "input": ["hello"]})
    assert emb.status_code in (400, 404, 503), emb.text
    assert emb.json()["error"]["code"] in ("invalid_request", "not_found", "base_model_unavailable", "unavailable")
    assert not marker.exists()


async def first_checkpoint(settings, job_id: str) -> Path:
    """Run the job until its first checkpoint is written, then stop the worker the way SIGTERM does.

    The job stays active with its checkpoint on disk: exactly what a replacement worker resumes from.
    """
    from aiaas.jobs.worker import Worker

    root = settings.jobs_dir / job_id  # each attempt works in its own attempt-<n>/ directory
    with Worker(settings) as worker:
        running = asyncio.create_task(asyncio.to_thread(worker.run_once))
        found: list[Path] = []
        for _ in range(1200):  # bounded: 60 s
            found = sorted(root.glob("attempt-*/checkpoints/step-*")) if root.is_dir() else []
            if found or running.done():
                break
            await asyncio.sleep(0.05)
        if worker.current is not None:
            worker.current.shutdown.set()
        status = await running
    assert status == "stopped" and found, (status, found)
    return found[0]


@SQLITE_ONLY
@pytest.mark.slow
async def test_pickles_in_checkpoints_are_refused_on_resume(client, settings, tiny_base, tmp_path: Path) -> None:
    """Trains from a base directory holding real safetensors beside a malicious pytorch_model.bin (the pickle
    must be ignored) and stops at the first checkpoint. Control: that job resumes from its untouched
    checkpoint and succeeds, so a planted checkpoint directory is really the one read. Then a copy of the
    checkpoint is planted into new jobs with one file swapped for a pickle each: every poisoned resume
    fails with an error that says what was refused, and the marker never appears."""
    marker = tmp_path / "pwned-checkpoint"
    install_evil_base(tiny_base, "evil-both", marker, keep_safetensors="root")
    file_id = await upload_toy(client)
    body = {"model": "evil-both", "training_file": file_id, "seed": 7,
            "hyperparameters": {"n_epochs": 8, "batch_size": 4}}

    first = (await client.post("/v1/fine_tuning/jobs", json=body)).json()
    checkpoint = await first_checkpoint(settings, first["id"])
    pristine = tmp_path / "pristine" / checkpoint.name
    shutil.copytree(checkpoint, pristine)
    assert not marker.exists()

    # Control: the stopped job resumes from its own untouched checkpoint and finishes.
    assert await run_worker(settings) == "succeeded"
    assert await resumed(client, first["id"])

    def trainer_state(d: Path) -> None:
        write_evil_pickle(d / "trainer_state.pt", marker)

    def optimizer(d: Path) -> None:
        write_evil_pickle(d / "optimizer.pt", marker)

    def scheduler(d: Path) -> None:
        write_evil_pickle(d / "scheduler.pt", marker)

    def weights(d: Path) -> None:
        (d / "model.safetensors").unlink()
        write_evil_pickle(d / "pytorch_model.bin", marker)

    for poison in (trainer_state, optimizer, scheduler, weights):
        job = (await client.post("/v1/fine_tuning/jobs", json=body)).json()
        # Where a job from before attempt directories kept them: the first attempt carries them over.
        planted = settings.jobs_dir / job["id"] / "checkpoints" / pristine.name
        shutil.copytree(pristine, planted)
        poison(planted)
        status = await run_worker(settings)
        final = (await client.get(f"/v1/fine_tuning/jobs/{job['id']}")).json()
        assert not marker.exists(), f"{poison.__name__}: the pickle ran"
        assert status == "failed" and final["status"] == "failed", (poison.__name__, final)
        assert final["error"] and final["error"]["message"], (poison.__name__, final)
        # What the user reads must say what was refused, not only that training failed.
        message = final["error"]["message"].lower()
        assert any(w in message for w in ("checkpoint", "weights", "safetensors")), final["error"]
    assert not marker.exists()


async def resumed(client, job_id: str) -> bool:
    events = (await client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000})).json()
    return any("Resumed from checkpoint" in e["message"] for e in events["data"])


def test_checkpoint_loader_refuses_pickles_directly(tmp_path: Path) -> None:
    """The same property one layer down, without the job machinery: load_checkpoint."""
    import torch

    from aiaas.training import checkpoints

    marker = tmp_path / "pwned-direct"
    step = tmp_path / "checkpoints" / "step-3"
    step.mkdir(parents=True)
    for name in ("optimizer.pt", "scheduler.pt"):
        torch.save({"state": {}, "param_groups": []}, step / name)
    write_evil_pickle(step / checkpoints.STATE_FILE, marker)
    (step / "metrics.json").write_text(json.dumps({"step": 3}))
    assert checkpoints.latest_checkpoint(tmp_path / "checkpoints") == step
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        checkpoints.load_checkpoint(step)
    assert not marker.exists()
