"""Frozen, cached lower layers: train only the top of the encoder.

With `freeze_layers` k > 0 the embeddings and encoder layers [0, k) are frozen. Their output for every
training and validation text does not change during the run, so it is computed once (no dropout, the
run's autocast precision), kept per example without padding, and each step then runs only layers
[k, L), the pooler and the head on a padded batch of those states. Evaluation reads the cached
validation states too. Above CACHE_LIMIT_BYTES the layers are frozen without the cache: their
backward is still skipped, their forward is not.

The split works on encoders shaped like BERT (`base_model.embeddings` and an `encoder.layer` module
list: BERT, MiniLM, RoBERTa, ELECTRA, XLM-R): for the upper part the embeddings are swapped for a
pass-through and `encoder.layer` for the upper layers while the HF model runs on `inputs_embeds`;
both are put back when the call returns, so checkpoints and the final model are the full, normal
HF model (the frozen weights are the base model's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.training import batching, runtime
from aiaas.training.config import TrainConfig

CACHE_LIMIT_BYTES = 1 << 30  # the cached states of train + validation (fp32) at most
# "auto": freeze this share of the encoder's layers (MiniLM-L6: 3 of 6). Measured (bench/README.md, "Training:
# frozen lower layers"): in the quiet training bench 1.41x the tuned HF Trainer's samples/s against 0.77x with
# every layer trained (the steps alone 2.03x), test accuracy -1.4 against -1.5 pt of the Trainer's; over 5 seeds
# on the same data -0.4 / -0.7 pt validation / test against k=0 (median), and on the one seed of five where the
# fully trained model fell to chance, k=3 trained normally; k=4 cost 1.3 / 1.7 pt. A trade, not a free
# lunch: AUTO_SHARE = 0 turns it off, and a job's freeze_layers=0 trains every layer. Encoders with fewer
# layers than AUTO_MIN_LAYERS were not measured and keep every layer trainable.
AUTO_SHARE = 0.5
AUTO_MIN_LAYERS = 4
# The cache is built in batches of up to this many (padded) tokens.
BUILD_TOKENS = 4096


def encoder_parts(model: Any) -> tuple[Any, Any] | None:
    """(embeddings module, encoder layer ModuleList) of a BERT-shaped encoder, else None."""
    import torch

    base = getattr(model, "base_model", None)
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if isinstance(embeddings, torch.nn.Module) and isinstance(layers, torch.nn.ModuleList):
        return embeddings, layers
    return None


def resolve(config: TrainConfig, model: Any, reinit_layers: int) -> tuple[int, str]:
    """How many lower layers to freeze, and why."""
    parts = encoder_parts(model)
    arch = type(model).__name__
    if config.freeze_layers == "auto":
        if parts is None:
            return 0, f"auto: {arch} has no BERT-shaped embeddings + encoder.layer to split; nothing frozen"
        n = len(parts[1])
        if n < AUTO_MIN_LAYERS:
            return 0, f"auto: {n} encoder layers (< {AUTO_MIN_LAYERS}, not measured); nothing frozen"
        k = max(0, min(int(n * AUTO_SHARE), n - reinit_layers))
        if k == 0:
            why = f"auto: {n} encoder layers, AUTO_SHARE {AUTO_SHARE}, reinit_layers {reinit_layers}"
            return 0, why + "; nothing frozen"
        return k, (
            f"auto: the lower {k} of {n} encoder layers frozen and their output cached (MiniLM-L6, 3 of 6: "
            "1.8x the samples/s of training every layer, -0.4 / -0.7 pt validation / test accuracy, median of "
            "5 seeds; freeze_layers=0 trains every layer; bench/README.md)"
        )
    k = int(config.freeze_layers)
    if k == 0:
        return 0, "requested"
    if parts is None:
        raise InvalidRequest(
            f"freeze_layers={k} needs a BERT-shaped encoder (embeddings + encoder.layer); {arch} is not. "
            "Use freeze_layers=0 or 'auto'.",
            param="freeze_layers",
        )
    n = len(parts[1])
    if k > n - reinit_layers:
        raise InvalidRequest(
            f"freeze_layers={k} but the base model has {n} encoder layers"
            + (f" and reinit_layers={reinit_layers} re-initialises the top ones" if reinit_layers else "")
            + f"; use at most {n - reinit_layers}.",
            param="freeze_layers",
        )
    return k, "requested"


def freeze(model: Any, k: int) -> None:
    """Stop gradients into the embeddings and encoder layers [0, k)."""
    parts = encoder_parts(model)
    assert parts is not None and k > 0
    embeddings, layers = parts
    embeddings.requires_grad_(False)
    for layer in layers[:k]:
        layer.requires_grad_(False)


def _pass_through() -> Any:
    """Stands in for the embeddings module: the cached states are already the input of layer k."""
    import torch

    class PassThrough(torch.nn.Module):
        def forward(self, *args: Any, inputs_embeds: Any = None, **kwargs: Any) -> Any:
            return inputs_embeds

    return PassThrough()


@contextlib.contextmanager
def _swapped(model: Any, embeddings: Any, layers: Any) -> Iterator[None]:
    base = model.base_model
    saved = base.embeddings, base.encoder.layer
    base.embeddings, base.encoder.layer = embeddings, layers
    try:
        yield
    finally:
        base.embeddings, base.encoder.layer = saved


@dataclass
class CachedStates:
    """One split's layer-k inputs: all examples' unpadded states in one [tokens, hidden] tensor."""

    flat: Any  # torch.Tensor, float32
    starts: np.ndarray  # row of example i's first token
    lengths: np.ndarray


class FrozenPrefix:
    """The frozen lower k layers of `model`, and (when they fit) their cached output per split."""

    def __init__(self, model: Any, k: int) -> None:
        import torch

        parts = encoder_parts(model)
        assert parts is not None
        self.model, self.k = model, k
        self.upper = torch.nn.ModuleList(list(parts[1][k:]))
        self.lower = torch.nn.ModuleList(list(parts[1][:k]))
        self.pass_through = _pass_through()
        self.splits: dict[str, CachedStates] = {}

    @property
    def cached(self) -> bool:
        return bool(self.splits)

    @staticmethod
    def cache_bytes(token_counts: int, hidden_size: int) -> int:
        return token_counts * hidden_size * 4

    def build(
        self,
        name: str,
        encoded: batching.Encoded,
        pad_id: int,
        device: str,
        precision: str,
        check_stop: Callable[[], None],
    ) -> None:
        """Run the embeddings and the lower layers once over a split, in eval mode (no dropout)."""
        import torch

        lengths = np.asarray(encoded.lengths, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        hidden = int(self.model.config.hidden_size)
        flat = torch.empty((int(lengths.sum()), hidden), dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            # no_grad, not inference_mode: inference tensors could not be saved for a later backward.
            with torch.no_grad(), _swapped(self.model, self.model.base_model.embeddings, self.lower):
                for index in batching.sequential_batches(lengths, 64, max_tokens=BUILD_TOKENS):
                    check_stop()
                    ids, mask, _ = batching.collate(encoded.input_ids, index, pad_id)
                    with runtime.autocast(device, precision):
                        out = self.model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device))
                    states = out.last_hidden_state.float().cpu()
                    for row, i in enumerate(index):
                        flat[starts[i] : starts[i] + lengths[i]] = states[row, : lengths[i]]
        finally:
            self.model.train(was_training)
        self.splits[name] = CachedStates(flat, starts, lengths)

    def batch(self, name: str, index: np.ndarray, device: str) -> tuple[Any, Any]:
        """The cached states of the examples at `index`, right-padded: (states, attention_mask)."""
        import torch

        cache = self.splits[name]
        lengths = cache.lengths[index]
        width = int(lengths.max())
        states = torch.zeros((len(index), width, cache.flat.shape[1]), dtype=torch.float32)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            n = int(cache.lengths[i])
            states[row, :n] = cache.flat[cache.starts[i] : cache.starts[i] + n]
            mask[row, :n] = 1
        return states.to(device), mask.to(device)

    def logits(self, name: str, index: np.ndarray, device: str) -> Any:
        """The model's logits for those examples, from their cached states through the upper layers
        (call it inside the run's autocast)."""
        states, mask = self.batch(name, index, device)
        with _swapped(self.model, self.pass_through, self.upper):
            return self.model(inputs_embeds=states, attention_mask=mask).logits


def setup(
    model: Any,
    k: int,
    sets: Any,
    device: str,
    precision: str,
    check_stop: Callable[[], None],
    event: Callable[..., None],
    limit_bytes: int | None = None,
) -> FrozenPrefix | None:
    """The run's frozen prefix (k > 0), its states cached for train and validation when they fit
    (within `limit_bytes`, CACHE_LIMIT_BYTES unless given)."""
    if k <= 0:
        return None
    limit_bytes = CACHE_LIMIT_BYTES if limit_bytes is None else limit_bytes
    prefix = FrozenPrefix(model, k)
    splits = {"train": sets.train, "validation": sets.validation}
    tokens = sum(int(np.sum(s.lengths)) for s in splits.values())
    need = FrozenPrefix.cache_bytes(tokens, int(model.config.hidden_size))
    if need > limit_bytes:
        event(
            "warning",
            f"Lower {k} layers frozen but not cached: their output would take {need / 2**20:.0f} MiB "
            f"(> {limit_bytes / 2**20:.0f} MiB); each step still runs them forward, without their backward.",
            data={"freeze_layers": k, "cache_bytes": need, "cached": False},
        )
        return prefix
    for name, encoded in splits.items():
        if len(encoded):
            prefix.build(name, encoded, sets.tokenizer.pad_token_id, device, precision, check_stop)
    event(
        "info",
        f"Lower {k} layers frozen; their output for {len(sets.train)} + {len(sets.validation)} texts cached "
        f"({need / 2**20:.1f} MiB).",
        data={"freeze_layers": k, "cache_bytes": need, "cached": True},
    )
    return prefix
