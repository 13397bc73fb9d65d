"""Cold start: a fresh Python process goes from an exported artifact to its first prediction
with `aiaas.serving.runtime.load_predictor` (files already in the OS page cache).

`in_process_s` (the headline) runs from the first line of the fresh process, so it
includes importing the runtime (onnxruntime, tokenizers, numpy), building the session
and the first predict; `process_s` adds the interpreter's own start-up as seen by the
parent (spawn to exit).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

_CHILD = """
import time
t0 = time.perf_counter()
import json, sys
from aiaas.serving.runtime import load_predictor
t1 = time.perf_counter()
predictor = load_predictor(sys.argv[1])
t2 = time.perf_counter()
probs = predictor.predict([sys.argv[2]])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2, "in_process_s": t3 - t0,
                  "precision": predictor.precision, "label": predictor.labels[int(probs[0].argmax())]}))
"""


def measure(onnx_dir: Path, text: str, *, runs: int, env: dict[str, str]) -> dict:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(onnx_dir), text],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        sample = json.loads(out.stdout.strip().splitlines()[-1])
        sample["process_s"] = time.perf_counter() - started
        samples.append(sample)
    keys = ("import_s", "load_s", "first_predict_s", "in_process_s", "process_s")
    return {
        "runs": runs,
        "median": {k: round(statistics.median(s[k] for s in samples), 4) for k in keys},
        "samples_in_process_s": [round(s["in_process_s"], 4) for s in samples],
        "precision": samples[0]["precision"],
    }
