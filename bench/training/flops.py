"""How close the engine's training step comes to the machine's matmul peak, and where a step goes.

    python -m bench.training.flops [--steps 8] [--train 1000]

1. Peak: the best of several large square GEMMs (2048 x 2048, torch.matmul, the threads the engine
   uses) in fp32 and, where the CPU has native bf16 (avx512_bf16 / amx_bf16), in bf16; also one GEMM
   of the shape the model's FFN has at batch 16 (512 tokens x 384 -> 1536), what a step can hope for.
2. FLOPs of a step, counted with torch.utils.flop_counter.FlopCounterMode on the engine's own model
   and update (MiniLM-L6, word embeddings frozen where the engine freezes them, forward + backward):
   every matmul torch dispatches. The counter has no formula for the CPU attention kernel
   (aten._scaled_dot_product_flash_attention_for_cpu), so its two matmuls (QK^T and PV, forward 4 *
   B * L^2 * hidden per layer, backward twice that) are added by formula. Counting two batch shapes
   gives the FLOPs per padded token and per sequence, so the engine's whole epoch (its length-grouped
   batches of the bench's training split) is counted without running it.
3. Achieved: `--steps` of the epoch's batches (spread over its lengths) run as the engine runs them
   (bf16 autocast where native, fused AdamW, gradient clipping, the schedule), timed without a
   profiler: FLOPs / seconds, and the fraction of the peak of the precision used (and of fp32's).
4. Where a step goes: the same steps under torch.profiler, each operator's own time put in one of
   matmul / attention / layernorm / dtype casts / other forward-backward ops, plus the optimizer
   (clip + AdamW + zero_grad + schedule) and data (building the padded batch), as % of the step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

GEMM_N = 2048
CATEGORIES = ("matmul", "attention", "layernorm", "dtype casts", "other forward/backward")


def gemm_peak(dtype: Any, n: int = GEMM_N, reps: int = 8, shape: tuple[int, int, int] | None = None) -> dict:
    """Best and median FLOP/s of torch.matmul on (m x k) @ (k x n) in `dtype`."""
    import torch

    m, k, n2 = shape or (n, n, n)
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n2).to(dtype)
    for _ in range(2):
        a @ b
    times, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    flops = 2.0 * m * k * n2
    return {
        "shape": [m, k, n2],
        "best_flops_per_s": round(flops / min(times)),
        "median_flops_per_s": round(flops / statistics.median(times)),
        # per second of CPU time this process got (all its threads): what a core does while it runs us,
        # whatever share of the cores other processes take
        "flops_per_cpu_s": round(flops * reps / max(sum(cpu), 1e-9)),
    }


def peaks(bf16: bool) -> dict:
    import torch

    ffn = (512, 384, 1536)  # batch 16 x 32 tokens through the 384 -> 1536 FFN layer
    out = {"fp32": gemm_peak(torch.float32), "fp32_ffn_shape": gemm_peak(torch.float32, shape=ffn)}
    if bf16:
        out["bf16"] = gemm_peak(torch.bfloat16)
        out["bf16_ffn_shape"] = gemm_peak(torch.bfloat16, shape=ffn, reps=20)
    return out


class Engine:
    """The engine's model, update and batches on the bench's training split (what aiaas.training.train
    builds with its defaults, seed 42), stepped here so a step can be counted, timed and profiled."""

    def __init__(self, texts: list[str], labels: list[int]) -> None:
        import torch

        from aiaas.training import batching, components, runtime
        from aiaas.training.base_models import builtin_minilm_dir, inspect_model_dir
        from aiaas.training.config import TrainConfig

        config = TrainConfig(base_model="minilm-l6")
        base = inspect_model_dir(builtin_minilm_dir(), model_id="minilm-l6")
        self.tokenizer = components.load_tokenizer(base)
        self.ids = batching.tokenize(self.tokenizer, texts, config.max_length)
        self.y = torch.tensor(labels)
        self.precision, _ = runtime.pick_precision(config.precision, "cpu")
        torch.manual_seed(config.seed)
        self.model = components.load_model(base, "single_label_classification", ["negative", "positive"])
        self.frozen, _ = components.freeze_embeddings(config, self.model, "cpu")
        self.optimizer, self.fused = components.optimizer(self.model, config, 2e-4, "cpu")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        lengths = np.array([len(x) for x in self.ids])
        self.batches = batching.epoch_batches(lengths, 16, seed=config.seed, epoch=0)
        self.hidden, self.layers = self.model.config.hidden_size, self.model.config.num_hidden_layers
        self.model.train()

    def step(self, index: np.ndarray, mark: Any = None) -> dict[str, float]:
        """One optimizer step as the engine takes it; seconds per phase."""
        import contextlib

        import torch

        from aiaas.training import batching, runtime

        mark = mark or (lambda name: contextlib.nullcontext())
        times, t0 = {}, time.perf_counter()
        with mark("## data"):
            x, mask, _ = batching.collate(self.ids, index, self.tokenizer.pad_token_id)
            y = self.y[torch.as_tensor(index)]
        times["data"], t0 = time.perf_counter() - t0, time.perf_counter()
        with mark("## forward"), runtime.autocast("cpu", self.precision):
            logits = self.model(input_ids=x, attention_mask=mask).logits
        with mark("## forward"):
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        times["forward"], t0 = time.perf_counter() - t0, time.perf_counter()
        with mark("## backward"):
            loss.backward()
        times["backward"], t0 = time.perf_counter() - t0, time.perf_counter()
        with mark("## optimizer"):
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        times["optimizer"] = time.perf_counter() - t0
        return times

    def counted_flops(self, batch: int, length: int) -> dict[str, float]:
        """FlopCounterMode's count of one forward + backward at (batch, length), no update, per operator."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from aiaas.training import runtime

        x = torch.full((batch, length), 1000)
        mask = torch.ones(batch, length, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            with runtime.autocast("cpu", self.precision):
                logits = self.model(input_ids=x, attention_mask=mask).logits
            torch.nn.functional.cross_entropy(logits.float(), torch.zeros(batch, dtype=torch.long)).backward()
        self.optimizer.zero_grad(set_to_none=True)
        return {str(op): float(n) for op, n in counter.get_flop_counts()["Global"].items()}

    def flop_model(self) -> dict[str, Any]:
        """FLOPs per padded token and per sequence of the linear layers (aten.mm / aten.addmm, linear in
        both), from two counted shapes; attention's matmuls are added by formula in batch_flops, so
        whatever the counter saw of them (aten.bmm where a shape takes the math kernel) is left out."""
        linear = lambda c: c.get("aten.mm", 0.0) + c.get("aten.addmm", 0.0)
        c1, c2 = self.counted_flops(16, 16), self.counted_flops(16, 48)
        per_token = (linear(c2) - linear(c1)) / (16 * 32)
        return {
            "per_token": per_token,
            "per_sequence": (linear(c1) - per_token * 16 * 16) / 16,
            "counted_16x16": c1,
            "counted_16x48": c2,
        }

    def batch_flops(self, coef: dict[str, Any], index: np.ndarray) -> float:
        """Training FLOPs of one batch: counted matmuls, plus attention's two matmuls by formula."""
        b, length = len(index), max(len(self.ids[i]) for i in index)
        attention = 3 * self.layers * 4 * b * length * length * self.hidden  # forward once, backward twice
        return coef["per_token"] * b * length + coef["per_sequence"] * b + attention


def _category(name: str) -> str | None:
    n = name.lower()
    if "attention" in n or "softmax" in n:
        return "attention"
    if "layer_norm" in n:
        return "layernorm"
    if any(k in n for k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "linear", "mkldnn")):
        return "matmul"
    if any(k in n for k in ("aten::to", "aten::_to_copy", "aten::copy_")):
        return "dtype casts"
    return None


def profile_table(engine: Engine, chosen: list[np.ndarray]) -> dict[str, Any]:
    """% of the profiled steps' time per category (operators' own time, attributed to their phase)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for index in chosen:
            engine.step(index, mark=record_function)
        total_us = 1e6 * (time.perf_counter() - t0)
    phase_us = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    cat_us = dict.fromkeys(CATEGORIES, 0.0)
    for ev in prof.events():
        if ev.name.startswith("## "):
            phase_us[ev.name[3:]] += ev.cpu_time_total
            continue
        parent = ev.cpu_parent
        while parent is not None and not parent.name.startswith("## "):
            parent = parent.cpu_parent
        if parent is not None and parent.name[3:] in ("forward", "backward"):
            cat = _category(ev.name)
            if cat:
                cat_us[cat] += ev.self_cpu_time_total
    fwd_bwd = phase_us["forward"] + phase_us["backward"]
    cat_us["other forward/backward"] = max(0.0, fwd_bwd - sum(cat_us.values()))
    rows = {**cat_us, "optimizer (clip + AdamW + zero_grad)": phase_us["optimizer"], "data": phase_us["data"]}
    rows["outside the phases"] = max(0.0, total_us - sum(phase_us.values()))
    return {
        "percent_of_step": {k: round(100 * v / total_us, 1) for k, v in rows.items()},
        "profiled_step_ms": round(total_us / 1000 / len(chosen), 1),
    }


def measure(texts: list[str], labels: list[int], steps: int) -> dict[str, Any]:
    import torch

    from aiaas.training import runtime

    engine = Engine(texts, labels)
    with runtime.torch_threads(runtime.available_cores()):
        threads = torch.get_num_threads()
        peak_before = peaks(engine.precision == "bf16")
        coef = engine.flop_model()
        epoch_flops = sum(engine.batch_flops(coef, b) for b in engine.batches)
        spread = np.linspace(0, len(engine.batches) - 1, steps).round().astype(int)
        chosen = [engine.batches[i] for i in spread]
        for index in chosen[:2]:  # warm-up: allocations, kernels
            engine.step(index)
        c0 = time.process_time()
        phases = [engine.step(index) for index in chosen]
        step_cpu_s = time.process_time() - c0
        step_s = sum(sum(p.values()) for p in phases)
        flops = sum(engine.batch_flops(coef, b) for b in chosen)
        table = profile_table(engine, chosen)
        peak = _best(peak_before, peaks(engine.precision == "bf16"))
    achieved = flops / step_s
    own_gemm = peak.get(engine.precision, peak["fp32"])
    own = own_gemm["best_flops_per_s"]
    per_cpu_s = flops / step_cpu_s
    return {
        "threads": threads,
        "omp_wait_policy_passive": runtime.omp_passive_in_effect(),
        "precision": engine.precision,
        "frozen_embeddings": engine.frozen,
        "fused_optimizer": engine.fused,
        "peak": peak,
        "flops_per_padded_token": round(coef["per_token"]),
        "flops_per_sequence": round(coef["per_sequence"]),
        "flop_counter_by_operator": {"16x16": coef["counted_16x16"], "16x48": coef["counted_16x48"]},
        # where the counter saw attention as aten.bmm, the formula must give the same number
        "attention_formula_16x48": 3 * engine.layers * 4 * 16 * 48 * 48 * engine.hidden,
        "epoch_flops": round(epoch_flops),
        "epoch_batches": len(engine.batches),
        "epoch_samples": len(texts),
        "steps_timed": steps,
        "achieved": {
            "steps_flops_per_s": round(achieved),
            "fraction_of_own_precision_peak": round(achieved / own, 4),
            "fraction_of_fp32_peak": round(achieved / peak["fp32"]["best_flops_per_s"], 4),
            # load-independent: FLOPs per CPU-second of the steps against the same of the GEMM
            "steps_flops_per_cpu_s": round(per_cpu_s),
            "fraction_of_own_precision_gemm_per_cpu_s": round(per_cpu_s / own_gemm["flops_per_cpu_s"], 4),
            "fraction_of_fp32_gemm_per_cpu_s": round(per_cpu_s / peak["fp32"]["flops_per_cpu_s"], 4),
        },
        "phase_share_unprofiled": {
            k: round(sum(p[k] for p in phases) / step_s, 3)
            for k in ("data", "forward", "backward", "optimizer")
        },
        "step_ms_unprofiled": round(1000 * step_s / steps, 1),
        "step_cpu_ms_unprofiled": round(1000 * step_cpu_s / steps, 1),
        "profile": table,
    }


def _best(a: dict, b: dict) -> dict:
    """The better of two peak measurements (before and after the steps) per GEMM (and per CPU-second)."""
    out = {k: max(a[k], b[k], key=lambda x: x["best_flops_per_s"]) for k in a}
    for k in out:
        out[k] = {**out[k], "flops_per_cpu_s": max(a[k]["flops_per_cpu_s"], b[k]["flops_per_cpu_s"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--validation", type=int, default=1000, help="the bench's split")
    parser.add_argument("--test", type=int, default=1000, help="the bench's split")
    args = parser.parse_args()
    # Before torch loads (its OpenMP reads the variable once): OMP_WAIT_POLICY=PASSIVE, as in the engine's
    # own runs; spinning threads would otherwise burn CPU time on busy shared cores.
    from aiaas.training import runtime  # noqa: F401
    from bench.training.common import loadavg
    from bench.training.run import _split

    split = _split(args.train, args.validation, args.test)
    index = {label: i for i, label in enumerate(split.labels)}
    load = loadavg()
    out = measure([t for t, _ in split.train], [index[y] for _, y in split.train], args.steps)
    print(json.dumps({**out, "loadavg": [load, loadavg()]}, indent=2))


if __name__ == "__main__":
    main()
