"""Where the training speed-up comes from: one process, the same optimizer step under nine
settings, interleaved round by round (a noisy neighbour slows every setting alike), medians.

    python -m bench.training.profile [--rounds 4] [--samples 64]

    pad128-fp32-b8     what the HF Trainer run does (texts padded to 128 tokens, fp32, batch 8)
    dynamic-fp32-b8    length-grouped batches padded to their longest text
    dynamic-fp32-b16   ... with aiaas's batch size below 2,000 examples
    dynamic-bf16-b16   ... in bf16 autocast: aiaas's defaults below 2,000 examples on an AMX CPU
    dynamic-bf16-b32   aiaas's defaults from 2,000 examples on

and two changes to the engine, on aiaas's batch-16 setting:

    ...+fused          torch.optim.AdamW(fused=True): one fused kernel instead of a loop over tensors
    ...+frozen-emb     the word-embedding matrix (11.7M of MiniLM-L6's 22.7M parameters) frozen: its
                       gradient is dense, so AdamW otherwise rewrites all 30,522 rows every step
    ...+fused+frozen   both (and the same in fp32, to see what bf16 still adds)

Also the engine's checkpoint save (model + optimizer + RNG), timed once, because the
engine saves ~10 per run plus one per epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {  # padding, precision, batch, engine change
    "pad128-fp32-b8": ("pad", "fp32", 8, ""),
    "dynamic-fp32-b8": ("dynamic", "fp32", 8, ""),
    "dynamic-fp32-b16": ("dynamic", "fp32", 16, ""),
    "dynamic-bf16-b16": ("dynamic", "bf16", 16, ""),
    "dynamic-bf16-b32": ("dynamic", "bf16", 32, ""),
    "dynamic-bf16-b16+fused": ("dynamic", "bf16", 16, "fused"),
    "dynamic-bf16-b16+frozen-emb": ("dynamic", "bf16", 16, "frozen"),
    "dynamic-bf16-b16+fused+frozen": ("dynamic", "bf16", 16, "fused+frozen"),
    "dynamic-fp32-b16+fused+frozen": ("dynamic", "fp32", 16, "fused+frozen"),
}


def profile(texts: list[str], *, rounds: int = 4, samples: int = 64, seed: int = 0) -> dict:
    import torch

    from aiaas.training import batching, checkpoints, runtime  # first: OMP_WAIT_POLICY=PASSIVE
    from aiaas.training.base_models import builtin_minilm_dir, inspect_model_dir
    from aiaas.training.components import load_model, load_tokenizer

    base = inspect_model_dir(builtin_minilm_dir(), model_id="minilm-l6")
    tokenizer = load_tokenizer(base)
    ids = batching.tokenize(tokenizer, texts, 128)
    lengths = np.array([len(x) for x in ids])
    torch.manual_seed(seed)
    model = load_model(base, "single_label_classification", ["negative", "positive"])
    embedding = model.get_input_embeddings().weight
    rest = [p for p in model.parameters() if p is not embedding]
    optimizers = {  # one per engine change, each over the parameters it trains
        "": torch.optim.AdamW(model.parameters(), lr=1e-6),
        "fused": torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True),
        "frozen": torch.optim.AdamW(rest, lr=1e-6),
        "fused+frozen": torch.optim.AdamW(rest, lr=1e-6, fused=True),
    }
    optimizer = optimizers[""]
    model.train()
    rng = np.random.default_rng(seed)
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    update_share: dict[str, list[float]] = {name: [] for name in SETTINGS}
    threads = runtime.available_cores()

    def step(index: np.ndarray, padding: str, precision: str, change: str = "") -> float:
        """One optimizer step; returns the seconds spent in clipping and optimizer.step()."""
        optimizer = optimizers[change]
        embedding.requires_grad_("frozen" not in change)
        x, mask, _ = batching.collate(ids, index, tokenizer.pad_token_id)
        if padding == "pad":  # to 128 like padding="max_length"
            width = 128 - x.shape[1]
            x = torch.nn.functional.pad(x, (0, width), value=tokenizer.pad_token_id)
            mask = torch.nn.functional.pad(mask, (0, width), value=0)
        with runtime.autocast("cpu", precision):
            logits = model(input_ids=x, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.zeros(len(index), dtype=torch.long))
        loss.backward()
        t0 = time.perf_counter()
        # Both the engine and the Trainer clip gradients to norm 1 before the update.
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
        optimizer.step()
        update_s = time.perf_counter() - t0
        optimizer.zero_grad(set_to_none=True)
        return update_s

    with runtime.torch_threads(threads):
        for name, (padding, precision, batch, change) in SETTINGS.items():  # warm-up: allocations, kernels
            step(rng.choice(len(ids), batch, replace=False), padding, precision, change)
        for _ in range(rounds):
            for name, (padding, precision, batch, change) in SETTINGS.items():
                # Batches as each side builds them: random (HF) or length-grouped (aiaas).
                if padding == "dynamic":
                    pool = batching.epoch_batches(lengths, batch, seed=int(rng.integers(1 << 30)), epoch=0)
                    chosen = [
                        pool[int(i)] for i in rng.choice(len(pool), max(1, samples // batch), replace=False)
                    ]
                else:
                    chosen = [
                        rng.choice(len(ids), batch, replace=False) for _ in range(max(1, samples // batch))
                    ]
                t0 = time.perf_counter()
                update_s = sum(step(index, padding, precision, change) for index in chosen)
                elapsed = time.perf_counter() - t0
                rates[name].append(sum(len(i) for i in chosen) / elapsed)
                update_share[name].append(update_s / elapsed)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            checkpoints.save_checkpoint(
                Path(tmp),
                1,
                model=model,
                tokenizer=tokenizer,
                optimizer=optimizer,
                scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                state={"step": 1},
            )
            checkpoint_s = time.perf_counter() - t0
    median = {name: round(statistics.median(v), 2) for name, v in rates.items()}
    ratio = lambda a, b: round(median[a] / median[b], 2)
    return {
        "samples_per_s_median": median,
        "samples_per_s_rounds": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "factors": {
            "dynamic_padding": ratio("dynamic-fp32-b8", "pad128-fp32-b8"),
            "batch_16": ratio("dynamic-fp32-b16", "dynamic-fp32-b8"),
            "bf16": ratio("dynamic-bf16-b16", "dynamic-fp32-b16"),
            "batch_32": ratio("dynamic-bf16-b32", "dynamic-bf16-b16"),
            "aiaas_b16_vs_hf": ratio("dynamic-bf16-b16", "pad128-fp32-b8"),
            "aiaas_b32_vs_hf": ratio("dynamic-bf16-b32", "pad128-fp32-b8"),
            "fused_adamw": ratio("dynamic-bf16-b16+fused", "dynamic-bf16-b16"),
            "frozen_embeddings": ratio("dynamic-bf16-b16+frozen-emb", "dynamic-bf16-b16"),
            "fused_and_frozen": ratio("dynamic-bf16-b16+fused+frozen", "dynamic-bf16-b16"),
            "aiaas_b16_fused_frozen_vs_hf": ratio("dynamic-bf16-b16+fused+frozen", "pad128-fp32-b8"),
            "bf16_with_fused_frozen": ratio("dynamic-bf16-b16+fused+frozen", "dynamic-fp32-b16+fused+frozen"),
        },
        "optimizer_update_share": {k: round(statistics.median(v), 3) for k, v in update_share.items()},
        "mean_tokens": round(float(lengths.mean()), 1),
        "threads": threads,
        "checkpoint_save_s": round(checkpoint_s, 2),
        "rounds": rounds,
        "samples_per_round": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=48)
    args = parser.parse_args()
    from bench.quality.datasets import mr_sentences

    print(json.dumps(profile(mr_sentences().texts, rounds=args.rounds, samples=args.samples), indent=2))


if __name__ == "__main__":
    main()
