"""The "## Training" section of bench/README.md, written from bench/results/training.json."""

from __future__ import annotations


def readme_section(r: dict) -> str:
    hf, ai = r["configs"]["hf_trainer"], r["configs"]["aiaas"]
    tuned = r["configs"].get("hf_trainer_tuned")  # runs before issue #18 have no tuned baseline
    d = r["data"]
    m = r["machine"]
    verdict = "met" if r["met"] else "**missed**"

    def row(name: str, c: dict) -> str:
        s = c["settings"]
        return (
            f"| {name} | {s['padding']}, {s['precision']}, batch {s['batch_size']}, lr {s['learning_rate']:g} "
            f"| {c['samples_per_s']:.1f} | {c['step_samples_per_s_median']:.1f} | {100 * c['val_accuracy']:.1f} "
            f"| {100 * c['test_accuracy']:.1f} | {c['train_s']:.0f} | {c['wall_s']:.0f} | {c['cpu_s']:.0f} |"
        )

    return f"""
`make bench-training` (`python -m bench.training.run`, {r["bench_seconds"] / 60:.1f} min here) fine-tunes
MiniLM-L6 {"three times" if tuned else "twice"} on the same {d["train"]} English polarity sentences ({d["source"]}), {r["epochs"]} epochs,
{m["cores"]} cores ({m["cpu_model"]}), one config after the other, each in a fresh process: the Hugging Face
`Trainer` with its defaults for this task (texts padded to max_length 128 like run_glue.py, fp32, batch 8,
lr 5e-5) and `aiaas.training.train` with its defaults (dynamic padding in length-grouped batches, precision
`auto`, batch and lr `auto`, evaluation and a checkpoint every epoch){_tuned_intro(tuned)}. Validation:
{d["validation"]} sentences; test: {d["test"]} more that no run sees.

| config | settings | samples/s | median samples/s (step windows) | val acc % | test acc % | train s | wall s | CPU s |
|---|---|---|---|---|---|---|---|---|
{row("HF Trainer", hf)}
{row("aiaas", ai)}{chr(10) + row("HF Trainer, tuned", tuned) if tuned else ""}

**speedup {r["speedup"]:.2f}×** (samples/s of the whole training call; {r["speedup_step_median"]:.2f}× on the
median step window, {r["speedup_wall"]:.2f}× end to end), **accuracy_delta {r["accuracy_delta"]:+.2f} pt** on
validation (paired bootstrap 95% interval {r["accuracy_delta_ci95"]}), {r["accuracy_delta_test"]:+.2f} pt on
test ({r["accuracy_delta_test_ci95"]}). Target: speedup ≥ {r["targets"]["speedup"]:g} with
accuracy_delta ≥ {r["targets"]["accuracy_delta_pt"]:g} pt — {verdict}. Load average during the runs:
HF {hf["loadavg_during"]}, aiaas {ai["loadavg_during"]} (2 shared cores: absolute numbers move between runs,
the ratio much less). Raw numbers: `bench/results/training.json`.{_vs_tuned(r)}

{_profile(r)}
""".strip()


def _tuned_intro(tuned: dict | None) -> str:
    if not tuned:
        return ""
    s = tuned["settings"]
    bf16 = (
        "bf16 (the CPU has native bf16)"
        if s["precision"] == "bf16"
        else "fp32 (no AMX or AVX-512 BF16 on this CPU, so no bf16)"
    )
    return (
        "; then the `Trainer` with its best flags for this model on this CPU: dynamic padding "
        "(`DataCollatorWithPadding`), length-grouped batches (`group_by_length`), "
        f"{bf16}, `optim={s['optim']}`, aiaas's batch size ({s['batch_size']}) and the same epochs"
    )


def _vs_tuned(r: dict) -> str:
    t = r.get("vs_hf_tuned")
    if not t:
        return ""
    return f"""

Against the tuned Trainer (the target above is judged against its defaults): speedup {t["speedup"]:.2f}×
({t["speedup_step_median"]:.2f}× on the median step window, {t["speedup_wall"]:.2f}× end to end),
accuracy_delta {t["accuracy_delta"]:+.2f} pt on validation ({t["accuracy_delta_ci95"]}),
{t["accuracy_delta_test"]:+.2f} pt on test ({t["accuracy_delta_test_ci95"]})."""


def _profile(r: dict) -> str:
    p = r.get("profile")
    if not p:
        return ""
    med, f, share = p["samples_per_s_median"], p["factors"], p["optimizer_update_share"]
    rows = "\n".join(f"| {name} | {rate:.1f} | {100 * share[name]:.0f}% |" for name, rate in med.items())
    ai = r["configs"]["aiaas"]
    b = ai["settings"]["batch_size"]
    own = f"aiaas_b{b}_vs_hf" if f"aiaas_b{b}_vs_hf" in f else "aiaas_b16_vs_hf"
    bf16 = f"bf16 autocast ×{f['bf16']:.2f}" + (
        " (no gain at batch 16 on this CPU)" if f["bf16"] < 1.05 else ""
    )
    return f"""Where the time goes (`python -m bench.training.profile`, run last: one process, one optimizer step of
MiniLM-L6 on these sentences (mean {p["mean_tokens"]} tokens) with gradient clipping, nine settings interleaved over
{p["rounds"]} rounds of {p["samples_per_round"]} samples, medians, OMP_WAIT_POLICY=PASSIVE for all; the last column
is the share of a step spent clipping gradients and in `optimizer.step()`):

| setting | samples/s | clip + AdamW update |
|---|---|---|
{rows}

Step for step, batch {b} with bf16 is ×{f[own]:.1f} HF's setting: dynamic padding ×{f["dynamic_padding"]:.2f}
(padding to 128 makes a step process {128 / p["mean_tokens"]:.1f}× the real tokens), batch 16 instead of 8
×{f["batch_16"]:.2f}, {bf16}, and batch 32 (the engine's choice from 2,000 examples) another ×{f["batch_32"]:.2f}.
With short, dynamically padded batches the optimizer update becomes a large part of a step
({100 * share["dynamic-bf16-b16"]:.0f}% at batch 16 in bf16): the word-embedding matrix is 11.7M of MiniLM-L6's
22.7M parameters and its gradient is dense, so AdamW rewrites all 30,522 rows every step. The engine
therefore uses `torch.optim.AdamW(fused=True)` (×{f["fused_adamw"]:.2f} here) and, with `freeze_embeddings`
"auto", freezes the word embeddings on CPU when they hold over a third of the parameters
(×{f["frozen_embeddings"]:.2f}; both ×{f["fused_and_frozen"]:.2f}, step for step ×{f["aiaas_b16_fused_frozen_vs_hf"]:.1f} HF's).

What remains between aiaas's step windows ({ai["step_samples_per_s_median"]:.1f}/s) and its whole training call
({ai["samples_per_s"]:.1f}/s) is work HF's timed `trainer.train()` does not do: loading the weights, tokenizing,
evaluating the validation set every epoch (early stopping and best-checkpoint selection need it; HF's
default evaluates never) and checkpointing each epoch. Both workers import torch and transformers before
their clocks start. The HF run has no OMP_WAIT_POLICY=PASSIVE: on shared, busy cores its OpenMP threads
spin-wait and it falls further behind (runs here on busy cores measured 4.7× with 1,500 sentences and 9.8×
with 2,000, where the engine also switches to batch 32).{_variants(r.get("engine_variants"))}"""


def _variants(v: dict | None) -> str:
    """The same two changes run through the real engine (bench.training.engine_variants), if measured."""
    if not v:
        return ""
    rows = "\n".join(
        f"| {name} | {x['samples_per_s']:.1f} | {x['step_samples_per_s_median']:.1f} | {100 * x['val_accuracy']:.1f} "
        f"| {100 * x['test_accuracy']:.1f} |"
        for name, x in v["variants"].items()
    )
    return f"""

The two changes patched into the real engine from outside (`python -m bench.training.engine_variants`,
{v["train"]} training sentences, {v["epochs"]} epochs, the same split, run {v["time"]}):

| engine | samples/s | median samples/s (step windows) | val acc % | test acc % |
|---|---|---|---|---|
{rows}

These were measured before fused AdamW and frozen word embeddings became the engine's defaults (the
baseline row is the engine without them); the run above has both."""
