"""The "## Training" section of bench/README.md, written from bench/results/training.json."""

from __future__ import annotations


def readme_section(r: dict) -> str:
    hf, ai = r["configs"]["hf_trainer"], r["configs"]["aiaas"]
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
MiniLM-L6 twice on the same {d["train"]} English polarity sentences ({d["source"]}), {r["epochs"]} epochs,
{m["cores"]} cores ({m["cpu_model"]}), one config after the other, each in a fresh process: the Hugging Face
`Trainer` with its defaults for this task (texts padded to max_length 128 like run_glue.py, fp32, batch 8,
lr 5e-5) and `aiaas.training.train` with its defaults (dynamic padding in length-grouped batches, precision
`auto`, batch and lr `auto`, evaluation and a checkpoint every epoch). Validation: {d["validation"]}
sentences; test: {d["test"]} more that neither run sees.

| config | settings | samples/s | median samples/s (step windows) | val acc % | test acc % | train s | wall s | CPU s |
|---|---|---|---|---|---|---|---|---|
{row("HF Trainer", hf)}
{row("aiaas", ai)}

**speedup {r["speedup"]:.2f}×** (samples/s of the whole training call; {r["speedup_step_median"]:.2f}× on the
median step window, {r["speedup_wall"]:.2f}× end to end), **accuracy_delta {r["accuracy_delta"]:+.2f} pt** on
validation (paired bootstrap 95% interval {r["accuracy_delta_ci95"]}), {r["accuracy_delta_test"]:+.2f} pt on
test ({r["accuracy_delta_test_ci95"]}). Target: speedup ≥ {r["targets"]["speedup"]:g} with
accuracy_delta ≥ {r["targets"]["accuracy_delta_pt"]:g} pt — {verdict}. Load average during the runs:
HF {hf["loadavg_during"]}, aiaas {ai["loadavg_during"]} (2 shared cores: absolute numbers move between runs,
the ratio much less). Raw numbers: `bench/results/training.json`.

{_profile(r)}
""".strip()


def _profile(r: dict) -> str:
    p = r.get("profile")
    if not p:
        return ""
    med, f, share = p["samples_per_s_median"], p["factors"], p["optimizer_update_share"]
    rows = "\n".join(f"| {name} | {rate:.1f} | {100 * share[name]:.0f}% |" for name, rate in med.items())
    hf, ai = r["configs"]["hf_trainer"], r["configs"]["aiaas"]
    b = ai["settings"]["batch_size"]
    own = f"aiaas_b{b}_vs_hf" if f"aiaas_b{b}_vs_hf" in f else "aiaas_b16_vs_hf"
    return f"""Where the speed-up comes from (`python -m bench.training.profile`, run last: one process, one optimizer
step of MiniLM-L6 on these sentences, mean {p["mean_tokens"]} tokens, five settings interleaved over {p["rounds"]}
rounds of {p["samples_per_round"]} samples, medians, OMP_WAIT_POLICY=PASSIVE for all; the last column is the share
of a step spent in `optimizer.step()`):

| setting | samples/s | AdamW update |
|---|---|---|
{rows}

Step for step, aiaas's setting (batch {b}) is ×{f[own]:.1f} HF's: dynamic padding ×{f["dynamic_padding"]:.2f} (padding
to 128 makes a step process {128 / p["mean_tokens"]:.1f}× the real tokens, but a short batch does not get
proportionally cheaper: the AdamW update of all 22.7M parameters, the 11.7M of the embedding matrix included,
costs the same per step), batch 16 instead of 8 ×{f["batch_16"]:.2f} (half the updates per sample), bf16 autocast
×{f["bf16"]:.2f} (AMX on this CPU), and batch 32 (from 2,000 examples) another ×{f["batch_32"]:.2f}. End to end,
aiaas also spends time outside the steps: an evaluation every epoch and ~{10 + r["epochs"]} checkpoint saves
({p["checkpoint_save_s"]:.1f} s each: model, optimizer and RNG state), so its whole-run rate
({ai["samples_per_s"]:.1f}/s) sits below its step windows ({ai["step_samples_per_s_median"]:.1f}/s). The HF
process runs with its defaults (no OMP_WAIT_POLICY=PASSIVE, a DataLoader per epoch, a checkpoint at step 500):
{hf["samples_per_s"]:.1f}/s whole run against {hf["step_samples_per_s_median"]:.1f}/s in its own step windows."""
