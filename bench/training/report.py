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
validation ({r["accuracy_delta_test"]:+.2f} pt on test). Target: speedup ≥ {r["targets"]["speedup"]:g} with
accuracy_delta ≥ {r["targets"]["accuracy_delta_pt"]:g} pt — {verdict}. Load average during the runs:
HF {hf["loadavg_during"]}, aiaas {ai["loadavg_during"]} (2 shared cores: absolute numbers move between runs,
the ratio much less). Raw numbers: `bench/results/training.json`.
""".strip()
