"""Config (a), the naive design: a sync FastAPI handler calling transformers/torch fp32 per request.

What a first version usually looks like: the HF pipeline pieces loaded at import, a
plain `def` route (FastAPI runs it in its thread pool), one forward pass per request,
torch's default threading, uvicorn with its defaults (one process, access log on).

    python -m bench.serving.naive_server --model-dir DIR --port 8001
"""

from __future__ import annotations

import argparse
import os

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class PredictIn(BaseModel):
    text: str


def create_app(model_dir: str) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: PredictIn) -> dict:
        inputs = tokenizer(body.text, return_tensors="pt", truncation=True, max_length=128)
        with torch.no_grad():
            logits = model(**inputs).logits
        probs = torch.softmax(logits, dim=-1)[0]
        best = int(probs.argmax())
        return {"label": model.config.id2label[best], "score": float(probs[best])}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    uvicorn.run(create_app(args.model_dir), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
