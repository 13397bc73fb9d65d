"""The `char-cnn` family: a small character CNN (after Kim 2014) trained from scratch, for text the
base model's tokenizer cannot read (aiaas.training.readability).

It learns its own representation from characters, so no vocabulary stands between it and
the text (Chinese for an English WordPiece, code, transliterations). The network:

    ids      the tfidf-linear character tokenizer (aiaas.training.classical.build_tokenizer):
             the training texts' characters, lowercased, word boundaries marked, MAX_CHARS long
    x        Embedding(vocab, DIM), padding zeroed by the attention mask
    h_w      ReLU(Conv1d(x, FILTERS, width w)) for w in WIDTHS, 'full' padding (any length >= 1)
    pooled   max over the positions whose window holds a real character, per filter
    logits   Linear(dropout(concat(pooled)))

Trained with Adam, early stopping on the engine's selection metric, within a deadline;
calibrated on validation (temperature, per-label Platt; on a slice held out of that early
stopping where aiaas.training.calibration.HOLD_OUT_SLICE is on) and folded into the last layer,
as tfidf-linear is. The model directory (what the exporter, aiaas.registry.export.charcnn,
turns into one ONNX graph with the transformer's inputs and a `logits` output):

    aiaas.json        {"family": "char-cnn", "task", "labels", "max_length", "metrics", "charcnn": {...}}
    tokenizer.json    the character tokenizer
    model.pt          the state dict (tensors only)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.training import classical

FAMILY = "char-cnn"
META_FILE = "aiaas.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.pt"
MAX_CHARS = 512  # characters read per text: a CNN's cost grows with length, and the head of a text decides
DIM = 64
FILTERS = 128
WIDTHS = (2, 3, 4, 5)
DROPOUT = 0.3


def build_model(vocab_size: int, n_out: int, *, dim: int = DIM, filters: int = FILTERS,
                widths: tuple[int, ...] = WIDTHS, dropout: float = DROPOUT) -> Any:  # fmt: skip
    """The network (torch is imported here: the serving runtime never imports this module)."""
    import torch
    from torch import nn
    from torch.nn import functional

    class CharCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.widths = tuple(widths)
            self.embed = nn.Embedding(vocab_size, dim, padding_idx=classical.PAD_ID)
            self.convs = nn.ModuleList(nn.Conv1d(dim, filters, w, padding=w - 1) for w in self.widths)
            self.dropout = nn.Dropout(dropout)
            self.out = nn.Linear(filters * len(self.widths), n_out)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.unsqueeze(1).to(torch.float32)  # [N, 1, L]
            x = self.embed(input_ids).transpose(1, 2) * mask  # [N, D, L]
            pooled = []
            for width, conv in zip(self.widths, self.convs, strict=True):
                h = torch.relu(conv(x))  # [N, F, L + w - 1]
                # A window counts when it holds at least one real character (ReLU >= 0, so zeroing the
                # others never raises the max).
                seen = functional.max_pool1d(functional.pad(mask, (width - 1, width - 1)), width, stride=1)
                pooled.append((h * seen).amax(dim=2))
            return self.out(self.dropout(torch.cat(pooled, dim=1)))

    return CharCNN()


def settings(vocab_size: int, n_out: int) -> dict[str, Any]:
    return {"vocab_size": vocab_size, "n_out": n_out, "dim": DIM, "filters": FILTERS,
            "widths": list(WIDTHS), "dropout": DROPOUT, "max_chars": MAX_CHARS}  # fmt: skip


def load(model_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(network in eval mode, tokenizer, aiaas.json) of a trained char-cnn directory."""
    import torch
    from tokenizers import Tokenizer

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / META_FILE).read_text())
    s = meta["charcnn"]
    model = build_model(s["vocab_size"], s["n_out"], dim=s["dim"], filters=s["filters"],
                        widths=tuple(s["widths"]), dropout=s["dropout"])  # fmt: skip
    state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, Tokenizer.from_file(str(model_dir / TOKENIZER_FILE)), meta


def logits(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """The network's logits for `texts`, batched in length order (eval mode, no gradients)."""
    import torch

    from aiaas.training.batching import collate

    ids = classical.encode(tokenizer, texts)
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(texts), model.out.out_features), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            x, mask, _ = collate(ids, index, classical.PAD_ID)
            out[index] = model(x, mask).float().numpy()
    return out


def predict(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Served scores (probabilities, or values for regression) from the trained directory."""
    model, tokenizer, meta = load(model_dir)
    return classical.outputs(meta["task"], logits(model, tokenizer, texts))


def is_charcnn(model_dir: Path) -> bool:
    try:
        return json.loads((Path(model_dir) / META_FILE).read_text()).get("family") == FAMILY
    except (OSError, ValueError, AttributeError):
        return False
