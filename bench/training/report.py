"""The "## Training" section of bench/README.md, written from bench/results/training.json."""

from __future__ import annotations

import statistics


def readme_section(r: dict) -> str:
    parts = [_intro(r), _configs_table(r), _targets_table(r), _comparisons(r)]
    parts += [_variants(r), _flops(r), _profile(r)]
    return "\n\n".join(p for p in parts if p).strip()


def _intro(r: dict) -> str:
    d, m = r["data"], r["machine"]
    flags = ", ".join(f for f, on in m["cpu_flags"].items() if on) or "none of avx2/avx512f/avx512_bf16/amx"
    native = m["cpu_flags"].get("avx512_bf16") or m["cpu_flags"].get("amx_bf16")
    bf16 = "on (the CPU has native bf16)" if native else "off (no native bf16 on this CPU)"
    return f"""`make bench-training` (`python -m bench.training.run`) fine-tunes MiniLM-L6 on the same {d["train"]} English polarity sentences ({d["source"]}), {r["epochs"]} epochs,
validation {d["validation"]} sentences, test {d["test"]} more that no run sees, each run in a fresh process, on
{m["cores"]} cores ({m["cpu_model"]}; flags: {flags}; these machines are shared, so the load average
during each run is in the table, {m["loadavg_start"]} when this report was put together). Three configs:

- **HF Trainer, defaults**: texts padded to max_length 128 like run_glue.py, fp32, batch 8, lr 5e-5, no
  warmup, seed 42 (set before the model is built, as run_glue.py does); one round.
- **aiaas**: `aiaas.training.train` with its defaults (dynamic padding in length-grouped batches, precision
  `auto`, batch and lr `auto`, word embeddings frozen on CPU, fused AdamW, evaluation and a checkpoint
  every epoch, best epoch kept).
- **HF Trainer, tuned** (issue #18): `DataCollatorWithPadding` (dynamic padding), `group_by_length`
  (`train_sampling_strategy="group_by_length"` in transformers 5), `bf16=True` {bf16},
  `optim="adamw_torch_fused"`, and aiaas's batch size, epochs, max_length (128), warmup steps then linear
  decay, weight decay, gradient clipping at 1.0 and learning rate; its predictions are read back in the
  dataset's order (with length grouping on, the Trainer predicts in a shuffled order: see "Training: the tuned
  Trainer at chance").

aiaas and the tuned Trainer run {r["rounds"]} rounds, alternating (aiaas, tuned, aiaas, tuned, ...),
round r with seed {42}+r on both sides; ratios are per round (the two runs of a round are minutes apart
on the same cores), accuracies are medians over rounds.{_note(r)}"""


def _note(r: dict) -> str:
    d = r["data"]
    sizes = (d["train"], d["validation"], d["test"], r["epochs"], r["rounds"])
    if sizes == (1000, 1000, 1000, 3, 3) and not r.get("note"):
        return ""
    return (
        f"\n\n**The run recorded here** used `--train {d['train']} --validation {d['validation']} --test "
        f"{d['test']} --rounds {r['rounds']}` (the bench's defaults: 1000 / 1000 / 1000 and 3 rounds). "
        + r.get("note", "")
    )


def _row(name: str, c: dict) -> str:
    s = c["settings"]
    return (
        f"| {name} | {s['padding']}, {s['precision']}, batch {s['batch_size']}, lr {s['learning_rate']:g}, "
        f"{_frozen(s)}seed {s.get('seed', 42)} | {c['samples_per_s']:.1f} | {c['step_samples_per_s_median']:.1f} "
        f"| {100 * c['val_accuracy']:.1f} | {100 * c['test_accuracy']:.1f} | {c['train_s']:.0f} "
        f"| {c['wall_s']:.0f} | {c['cpu_s']:.0f} | {_load(c)} |"
    )


def _frozen(s: dict) -> str:
    """The engine's frozen, cached lower layers (runs recorded before freeze_layers existed: nothing)."""
    k = s.get("freeze_layers")
    return f"freeze_layers {k}, " if k is not None else ""


def _load(c: dict) -> str:
    return " → ".join(str(x[0]) for x in c.get("loadavg_during", []))


def _configs_table(r: dict) -> str:
    hf = r["configs"].get("hf_trainer")
    rows = [_row("HF Trainer, defaults", hf)] if hf else []
    detail = r["rounds_detail"]
    for i, ai in enumerate(detail["aiaas"]):
        rows.append(_row(f"aiaas, round {i}", ai))
        if i < len(detail["hf_trainer_tuned"]):
            rows.append(_row(f"HF Trainer tuned, round {i}", detail["hf_trainer_tuned"][i]))
    for name, runs in (("aiaas", detail["aiaas"]), ("HF Trainer tuned", detail["hf_trainer_tuned"])):
        if not runs:
            continue
        med = lambda k: statistics.median(x[k] for x in runs)
        rows.append(
            f"| **{name}, median** | | {med('samples_per_s'):.1f} | {med('step_samples_per_s_median'):.1f} "
            f"| {100 * med('val_accuracy'):.1f} | {100 * med('test_accuracy'):.1f} | {med('train_s'):.0f} "
            f"| {med('wall_s'):.0f} | {med('cpu_s'):.0f} | |"
        )
    head = (
        "| config | settings | samples/s | median samples/s (step windows) | val acc % | test acc % "
        "| train s | wall s | CPU s | 1-min load avg (start → end) |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(rows)


def _targets_table(r: dict) -> str:
    rows = "\n".join(
        f"| {name} | {_value(name, t['value'])} | ≥ {t['target']:g}{'' if 'delta' in name else '×'} "
        f"| {_verdict(t)} |"
        for name, t in r["targets"].items()
    )
    return (
        "Targets (`targets` in `bench/results/training.json`; speed-ups are samples/s of the whole training "
        "call, median of the per-round ratios; accuracy deltas are aiaas − baseline in points, medians over "
        "rounds):\n\n| target | value | target | |\n|---|---|---|---|\n" + rows
    )


def _value(name: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:+.2f}" if "delta" in name else f"{value:.2f}×"


def _verdict(t: dict) -> str:
    if t["value"] is None:
        return "not measured in this run (`met: false`)"
    return "met" if t["met"] else "**missed**"


def _comparisons(r: dict) -> str:
    t = r["vs_hf_tuned"]
    if not t:
        return "The tuned Trainer did not finish a round in this run (`--skip-tuned`): see the note above."
    tuned = f"""Against the tuned Trainer: speed-up per round {t["speedup_rounds"]} (median {t["speedup"]:.2f}×;
{t["speedup_step_median"]:.2f}× on the median step window, {t["speedup_wall"]:.2f}× end to end,
{t.get("speedup_cpu_s", 0):.2f}× in CPU seconds of the whole worker process for the same samples), accuracy
{t["accuracy_delta"]:+.2f} pt on validation and {t["accuracy_delta_test"]:+.2f} pt on test (round 0's paired
bootstrap 95% intervals: {t["accuracy_delta_ci95"]} and {t["accuracy_delta_test_ci95"]})."""
    if "speedup" not in r:
        return tuned + " The Trainer's defaults were not run this time (`--skip-defaults`)."
    return tuned + f""" Against the Trainer's defaults: {r["speedup"]:.2f}× (per aiaas round {r["speedup_rounds"]}; {r["speedup_step_median"]:.2f}×
on step windows, {r["speedup_wall"]:.2f}× end to end), {r["accuracy_delta"]:+.2f} pt on validation
({r["accuracy_delta_ci95"]}), {r["accuracy_delta_test"]:+.2f} pt on test ({r["accuracy_delta_test_ci95"]})."""


def _variants(r: dict) -> str:
    """Seed-repeated speed choices of the engine (bench.training.engine_variants)."""
    v = r.get("engine_variants")
    if not v or "summary" not in v:
        return ""
    summary = dict(v["summary"])
    if "default" not in summary:  # the bench's own aiaas rounds are the defaults at seeds 42, 43, ...
        from bench.training.engine_variants import summarize

        runs = [{**x, "seed": x["settings"]["seed"]} for x in r["rounds_detail"]["aiaas"]]
        summary = {"default (the rounds above)": summarize(runs), **summary}
    rows = "\n".join(
        f"| {name} | {v['overrides'].get(name, {}) or 'none'} | {s['seeds']} | {s['val_accuracy']['mean']:.1f} ± "
        f"{s['val_accuracy']['std']:.1f} | {s['test_accuracy']['mean']:.1f} ± {s['test_accuracy']['std']:.1f} "
        f"| {s['samples_per_s']['mean']:.1f} |"
        for name, s in summary.items()
    )
    return _variants_table(v, summary, rows) + _variants_deltas(summary, v.get("runs"))


def _variants_deltas(summary: dict, runs: dict | None = None) -> str:
    """Each turned-back choice minus the defaults, in points: paired seed by seed over the seeds both have
    (when the runs are there), beside the spread of the defaults over seeds."""
    base_name = next(n for n in summary if n.startswith("default"))
    base = summary[base_name]
    by_seed = {r["seed"]: r for r in (runs or {}).get("default", [])}
    lines = []
    for name, s in summary.items():
        if name == base_name:
            continue
        pairs = [(r, by_seed[r["seed"]]) for r in (runs or {}).get(name, []) if r["seed"] in by_seed]
        if pairs:
            diff = {
                k: [round(100 * (a[k] - b[k]), 1) for a, b in pairs] for k in ("val_accuracy", "test_accuracy")
            }
            lines.append(
                f"- `{name}` minus the defaults, seed by seed ({[a['seed'] for a, _ in pairs]}): validation "
                f"{diff['val_accuracy']} pt, test {diff['test_accuracy']} pt (the defaults' own spread over "
                f"seeds: ± {base['val_accuracy']['std']:.1f} validation, ± {base['test_accuracy']['std']:.1f} test)"
            )
            continue
        d_val = s["val_accuracy"]["mean"] - base["val_accuracy"]["mean"]
        d_test = s["test_accuracy"]["mean"] - base["test_accuracy"]["mean"]
        lines.append(f"- `{name}` minus the defaults: {d_val:+.2f} pt validation, {d_test:+.2f} pt test")
    return "\n\n" + "\n".join(lines) if lines else ""


def _variants_table(v: dict, summary: dict, rows: str) -> str:
    return f"""Do the engine's speed choices cost accuracy? (`python -m bench.training.engine_variants`: the real
engine on the same split, {v["train"]} training sentences, {v["epochs"]} epochs, one choice turned back at a
time, the same seeds; mean ± sample standard deviation over seeds; samples/s are not comparable between
rows, the runs were minutes apart on loaded cores, run {v["time"]}):

| engine | TrainConfig change | seeds | val acc % | test acc % | samples/s |
|---|---|---|---|---|---|
{rows}"""


def _flops(r: dict) -> str:
    f = r.get("flops")
    if not f:
        return ""
    p, a = f["peak"], f["achieved"]
    g = lambda x: f"{x / 1e9:.1f}"
    rows = "\n".join(
        f"| {name} | {'×'.join(map(str, x['shape']))} | {g(x['best_flops_per_s'])} | {g(x['median_flops_per_s'])} "
        f"| {g(x['flops_per_cpu_s']) if 'flops_per_cpu_s' in x else 'not measured'} |"
        for name, x in p.items()
    )
    ai = statistics.median(x["samples_per_s"] for x in r["rounds_detail"]["aiaas"])
    per_sample = f["epoch_flops"] / f["epoch_samples"]
    call = ai * per_sample
    own = p.get(f["precision"], p["fp32"])["best_flops_per_s"]
    spin = (
        ""
        if f.get("omp_wait_policy_passive", True)
        else " This flops run had OpenMP spin-waiting on (OMP_WAIT_POLICY unset; fixed since): on cores this "
        "busy spinning threads add CPU time to the steps and less to the large GEMMs, so the per-CPU-second "
        "fraction is understated."
    )
    return _flops_text(f, g, rows, ai, per_sample, call, own, a, p, r) + spin


def _flops_text(f: dict, g, rows: str, ai: float, per_sample: float, call: float, own: float, a: dict, p: dict, r: dict) -> str:
    return f"""Achieved FLOP/s (`python -m bench.training.flops`, {f["threads"]} threads, load average
{f["loadavg"][0][0]} → {f["loadavg"][1][0]}): the machine's matmul peak measured with torch.matmul, best and
median wall-clock GFLOP/s of repeated GEMMs and GFLOP per CPU-second this process got (its threads together;
on cores shared with a load average of 10-20 a wall-clock rate measures mostly our share of the cores, and
only short GEMMs that fit in a time slice show the hardware's rate):

| GEMM | shape | best GFLOP/s | median GFLOP/s | GFLOP per CPU-s |
|---|---|---|---|---|
{rows}

A training step of the engine (FlopCounterMode: {f["flops_per_padded_token"] / 1e6:.1f} MFLOP per padded token
in the linear layers forward + backward, attention's matmuls by formula: 6 × {f["flops_per_padded_token"] / 6e6:.1f}M
parameters a token, the encoder's matrices; the frozen 11.7M-parameter word-embedding lookup is no matmul):
one epoch of its length-grouped batches is {f["epoch_flops"] / 1e12:.2f} TFLOP ({per_sample / 1e9:.2f} GFLOP per
sample). Over {f["steps_timed"]} of those steps ({f["precision"]}, embeddings frozen: {f["frozen_embeddings"]},
fused AdamW: {f["fused_optimizer"]}; {f["step_ms_unprofiled"]:.0f} ms wall, {f.get("step_cpu_ms_unprofiled", 0):.0f} ms
CPU a step): **{g(a.get("steps_flops_per_cpu_s", 0))} GFLOP per CPU-second =
{100 * a.get("fraction_of_own_precision_gemm_per_cpu_s", 0):.1f}% of the {f["precision"]} 2048³ GEMM's rate per
CPU-second** ({100 * a.get("fraction_of_fp32_gemm_per_cpu_s", 0):.1f}% of fp32's). Wall-clock:
{g(a["steps_flops_per_s"])} GFLOP/s = {100 * a["fraction_of_own_precision_peak"]:.1f}% of the best {f["precision"]}
2048³ GEMM ({100 * a["fraction_of_fp32_peak"]:.1f}% of fp32's); over the bench's whole training call (median aiaas
round, {ai:.1f} samples/s, evaluation and checkpoints included but not counted) {g(call)} GFLOP/s =
{100 * call / own:.1f}% of that.{_call_per_cpu_s(r, f)}"""


def _call_per_cpu_s(r: dict, f: dict) -> str:
    """The engine's own run (OMP_WAIT_POLICY=PASSIVE, as it sets): training FLOPs per CPU-second of its process."""
    p = f["peak"].get(f["precision"], f["peak"]["fp32"])
    if "flops_per_cpu_s" not in p or f["epoch_samples"] != r["data"]["train"]:
        return ""
    cpu = statistics.median(x["cpu_s"] for x in r["rounds_detail"]["aiaas"])
    rate = r["epochs"] * f["epoch_flops"] / cpu
    return (
        f" Per CPU-second of the bench's aiaas worker process (median {cpu:.0f} CPU s for {r['epochs']} epochs, "
        f"model loading, evaluation, checkpoints and test prediction included, so a lower bound): "
        f"{rate / 1e9:.1f} GFLOP = **{100 * rate / p['flops_per_cpu_s']:.0f}% of the {f['precision']} GEMM's "
        "rate per CPU-second**."
    )


def _profile(r: dict) -> str:
    f, p = r.get("flops"), r.get("profile")
    out = []
    if f:
        t = f["profile"]["percent_of_step"]
        rows = "\n".join(f"| {k} | {v:.1f}% |" for k, v in t.items())
        share = f["phase_share_unprofiled"]
        out.append(
            f"""Where a step goes (torch.profiler over the same {f["steps_timed"]} steps, {f["profile"]["profiled_step_ms"]:.0f} ms a
step under the profiler; operators' own CPU time inside forward/backward by kind, the optimizer phase
(clip + AdamW + zero_grad + schedule) and the data phase (padding the batch) whole; without the profiler the
phases were forward {100 * share["forward"]:.0f}%, backward {100 * share["backward"]:.0f}%, optimizer
{100 * share["optimizer"]:.0f}%, data {100 * share["data"]:.0f}%):

| part of a step | % of step |
|---|---|
{rows}"""
        )
    if p:
        med, share = p["samples_per_s_median"], p["optimizer_update_share"]
        rows = "\n".join(f"| {name} | {rate:.1f} | {100 * share[name]:.0f}% |" for name, rate in med.items())
        fa = p["factors"]
        out.append(
            f"""Step by step, settings interleaved in one process (`python -m bench.training.profile`: {p["rounds"]} rounds
of {p["samples_per_round"]} samples, medians, mean {p["mean_tokens"]} tokens a sentence; the last column is
the share of a step spent clipping gradients and in `optimizer.step()`): dynamic padding ×{fa["dynamic_padding"]:.2f},
batch 16 instead of 8 ×{fa["batch_16"]:.2f}, bf16 autocast ×{fa["bf16"]:.2f}, fused AdamW ×{fa["fused_adamw"]:.2f},
frozen word embeddings ×{fa["frozen_embeddings"]:.2f} (both ×{fa["fused_and_frozen"]:.2f}).

| setting | samples/s | clip + AdamW update |
|---|---|---|
{rows}"""
        )
    return "\n\n".join(out) + "\n\nRaw numbers: `bench/results/training.json`." if out else ""
