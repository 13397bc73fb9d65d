"""Config (b): LitServe serving the same ONNX int8 graph with its own dynamic batching.

Written the way LitServe's docs suggest: `setup` loads an ONNX Runtime session and the
fast tokenizer, `batch`/`predict`/`unbatch` run one padded batch per call (padding to
the batch's longest sentence, which is what the tokenizer's batch padding does), and
LitServer batches up to `max_batch_size` requests or `batch_timeout` seconds. One ORT
intra-op thread per inference worker, `--workers` workers (default: one per core).

    python -m bench.serving.litserve_server --onnx-dir DIR --port 8002 [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import litserve as ls
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_S = 0.005


class OnnxClassifier(ls.LitAPI):
    def __init__(self, onnx_dir: str, threads: int) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        self.onnx_dir = Path(onnx_dir)
        self.threads = threads

    def setup(self, device) -> None:
        meta = json.loads((self.onnx_dir / "aiaas.json").read_text())
        runtime = meta["runtime"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.onnx_dir / runtime["file"]), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(self.onnx_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=meta["max_length"])
        self.tokenizer.enable_padding(pad_id=runtime["pad_token_id"])
        self.labels = meta["labels"]

    def decode_request(self, request: dict) -> str:
        return request["text"]

    def batch(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def predict(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (logits,) = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, probs: np.ndarray) -> dict:
        best = int(probs.argmax())
        return {"label": self.labels[best], "score": float(probs[best])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads per worker")
    args = parser.parse_args()
    api = OnnxClassifier(args.onnx_dir, args.threads)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, timeout=30)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
