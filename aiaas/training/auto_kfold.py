"""auto's small-data path (aiaas.training.auto_cv): which candidates are cross-validated, the choice
on the mean of their fold scores, and the refit.

    tfidf-linear   always cross-validated under the row threshold (its folds take seconds), unless the
                   time budget runs out first: then k-fold CV stops, says so, and every family is judged
                   on the validation split as before
    transformer    cross-validated only when the plan's time estimate (aiaas.training.auto_plan) says k
                   fold fits fit in what is left of the budget; otherwise it is trained and scored on the
                   validation split, and the choice is made there (an event says why)
    char-cnn       trained and scored on the validation split (so that choice is made there too)

When every trained candidate was cross-validated, the better mean of the k fold scores wins; the
ensemble's weight is fit on the out-of-fold scores and it is judged by its fold mean too. The winner
is then served as:

    tfidf-linear   refit on all rows (aiaas.training.auto_refit), calibrated on out-of-fold logits;
                   also after a split-judged choice, whenever its folds all ran
    transformer    the best fold's model (by the selection metric on its own held-out fold; the last fold's
                   was served at first, and a fold that did not learn made a whole job's model useless):
                   trained on k-1 folds, its held-out fold picks its epoch and calibrates it (rows it
                   did not train on; with calibration.HOLD_OUT_SLICE, one part picks, the other fits:
                   calibrate_transformer.split_for_calibration).
                   A refit on all rows would need one more full run and a calibration fit on
                   out-of-fold logits through the transformer head; not done: decided for the budget
    ensemble       the refit tfidf-linear and that transformer, with the out-of-fold weight
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.training import auto_plan, batching, classical, ensemble, metrics
from aiaas.training.auto_cv import (
    SUMMARY_KEYS,
    Deadline,
    FoldRun,
    Folds,
    KFold,
    Quiet,
    folds,
    mean_pm,
    numbers,
    pooled_rows,
    run_folds,
    summary,
)
from aiaas.training.auto_refit import classical_fold, refit_classical
from aiaas.training.calibrate_transformer import split_for_calibration
from aiaas.training.config import TrainConfig
from aiaas.training.family_result import TRANSFORMER, calibrate
from aiaas.training.loop import train
from aiaas.training.types import ExampleLike, PreparedDataLike, TrainCallbacks, TrainingStopped, TrainResult

METRIC_KEYS = SUMMARY_KEYS


class SmallData:
    """One auto job's k-fold state: the folds (None when CV is off), each family's fold run, the refit."""

    def __init__(self, task: str, cv_dir: Path, kfold: KFold, split: Folds | None, reason: str) -> None:
        self.task = task
        self.cv_dir = cv_dir
        self.kfold = kfold
        self.folds = split
        self.reason = reason  # why CV is off, or stopped
        self.runs: dict[str, FoldRun] = {}
        self.transformer_plan: dict[str, Any] | None = None
        self.refit_result: TrainResult | None = None
        self.split_train_rows = 0

    # -- starting: the folds, and tfidf-linear's fold fits ---------------------------------------------
    @classmethod
    def start(
        cls, config: TrainConfig, data: PreparedDataLike, cv_dir: Path, callbacks: TrainCallbacks, kfold: KFold,
        deadline: float,
    ) -> SmallData:  # fmt: skip
        n = pooled_rows(data)
        if n >= kfold.max_rows:
            reason = f"{n} rows, not under auto_kfold_max_rows {kfold.max_rows}"
            return cls(config.task, cv_dir, kfold, None, reason)
        if not data.validation:
            return cls(config.task, cv_dir, kfold, None, "no validation rows: the job asked for none")
        split = folds(data, kfold.k, config.seed)
        if split is None:
            return cls(config.task, cv_dir, kfold, None, f"{n} rows are too few for 2 folds")
        self = cls(config.task, cv_dir, kfold, split, "")
        self.split_train_rows = len(data.train)
        callbacks.event(
            "info",
            f"auto: {n} rows (under {kfold.max_rows}): families judged by {split.k}-fold cross-validation "
            f"({split.method}) on train + validation",
            data={"cv": split.describe()},
        )
        fit = classical_fold(config, cv_dir / classical.FAMILY, callbacks)
        run = run_folds(classical.FAMILY, split, fit, callbacks, deadline)
        self.runs[classical.FAMILY] = run
        if not run.complete:
            self.reason = f"k-fold CV stopped: {run.stopped}"
            callbacks.event("warning", f"auto: {self.reason}; the families are judged on the validation split")
        return self

    @property
    def active(self) -> bool:
        run = self.runs.get(classical.FAMILY)
        return self.folds is not None and run is not None and run.complete

    @property
    def can_refit(self) -> bool:
        return self.active

    @property
    def rows(self) -> list[ExampleLike]:
        return self.folds.rows if self.folds is not None else []

    def record_classical(self, candidate: dict[str, Any]) -> None:
        run = self.runs.get(classical.FAMILY)
        if run is not None and run.results:
            candidate["cv"] = run.summary(self.task)
            candidate["trained_tokens"] += sum(int(r.trained_tokens or 0) for r in run.results)

    # -- the transformer: k folds if they fit ------------------------------------------------------------
    def plan_transformer(self, plan: dict[str, Any], callbacks: TrainCallbacks) -> dict[str, Any] | None:
        """The transformer's k-fold plan, or None where k-fold CV is not in use."""
        if not self.active or self.folds is None:
            return None
        # The plan's cost per epoch was measured for the split's train rows; a fold trains on (k-1)/k of all.
        folds_plan = auto_plan.plan_folds(plan, self.folds.k, len(self.rows), self.split_train_rows)
        self.transformer_plan = folds_plan
        if plan.get("run") and not folds_plan["run"]:
            callbacks.event(
                "info",
                f"auto: transformer scored on the validation split, not by {self.folds.k}-fold CV: "
                f"{folds_plan['reason']}",
                data={"cv_plan": folds_plan},
            )
        return folds_plan

    def transformer(
        self, config: TrainConfig, callbacks: TrainCallbacks, base_models_dir: Path | None,
        folds_plan: dict[str, Any], started: float,
    ) -> tuple[TrainResult | None, dict[str, Any]]:  # fmt: skip
        assert self.folds is not None
        split = self.folds
        callbacks.event(
            "info", f"auto: transformer cross-validated: {folds_plan['reason']}", data={"cv_plan": folds_plan}
        )
        work_dir = self.cv_dir / TRANSFORMER

        def fit(i: int, data: Any) -> tuple[TrainResult, np.ndarray, None]:
            limit = float(folds_plan["hard_limit_s"])
            guard = Deadline(Quiet(callbacks), time.monotonic() + limit)
            try:
                # The held-out fold picks the epoch and fits the calibration (split_for_calibration: which rows).
                split = split_for_calibration(config, data)
                result = train(config, split.data, work_dir / f"fold-{i + 1}", guard, base_models_dir=base_models_dir)
            except TrainingStopped as exc:
                if guard.over_budget:
                    raise TrainingStopped(f"over its time limit ({limit:.0f} s)") from exc
                raise
            calibrate(result, config.task, data, guard, split)
            texts = [ex.text for ex in data.validation]
            return result, ensemble.validation_probs(result.model_dir, TRANSFORMER, texts), None

        run = run_folds(TRANSFORMER, split, fit, callbacks, started + float(folds_plan["left_seconds"]))
        self.runs[TRANSFORMER] = run
        tokens = sum(int(r.trained_tokens or 0) for r in run.results)
        seconds = round(time.monotonic() - started, 1)
        if not run.complete:
            callbacks.event(
                "warning", f"auto: transformer k-fold CV stopped: {run.stopped}; it is trained on the split "
                "instead if one run still fits the budget"
            )
            return None, {"status": "stopped", "reason": f"k-fold CV: {run.stopped}", "seconds": seconds,
                          "trained_tokens": tokens, "cv": run.summary(self.task)}  # fmt: skip
        metric, sign = metrics.SELECTION[self.task]
        i = max(range(len(run.results)), key=lambda j: sign * float(run.results[j].metrics.get(metric, -sign * np.inf)))
        served = run.results[i]
        candidate: dict[str, Any] = {
            "status": "trained",
            "seconds": seconds,
            "trained_tokens": tokens,
            **{k: float(served.metrics[k]) for k in METRIC_KEYS if isinstance(served.metrics.get(k), int | float)},
            "cv": run.summary(self.task),
            "served": f"the fold-{i + 1} model (the best fold by {metric}): trained on "
            f"{len(split.rows) - len(split.held_out(i))} rows, calibrated on its held-out fold",
        }
        return served, candidate

    # -- the choice ---------------------------------------------------------------------------------
    def judges(self, candidates: dict[str, dict[str, Any]]) -> bool:
        """True when every trained candidate was cross-validated in full: the choice is by fold means."""
        if not self.active:
            return False
        trained = [name for name, c in candidates.items() if c.get("status") == "trained"]
        return all(name in self.runs and self.runs[name].complete for name in trained)

    def use_cv_scores(self, candidates: dict[str, dict[str, Any]]) -> None:
        """The candidates' headline scores become their fold means (what the choice compares); the split
        scores tfidf-linear also has move under "split", the served fold's under "served_fold"."""
        for name, candidate in candidates.items():
            cv = candidate.get("cv")
            if not cv or name not in self.runs or not self.runs[name].complete:
                continue
            moved = {k: candidate.pop(k) for k in METRIC_KEYS + ("ece_uncalibrated",) if k in candidate}
            candidate["split" if name == classical.FAMILY else "served_fold"] = moved
            candidate.update(cv["mean"])

    def explain(self, chosen: str, why: str, candidates: dict[str, dict[str, Any]]) -> str:
        assert self.folds is not None
        metric = metrics.SELECTION[self.task][0]
        shown = [
            f"{name} {mean_pm(c['cv'], metric)}"
            for name, c in candidates.items()
            if c.get("status") == "trained" and c.get("cv") and metric in c["cv"]["mean"]
        ]
        return f"{why}: {metric} mean ± std over {self.folds.k} folds: {', '.join(shown)}"

    def why_split(self, candidates: dict[str, dict[str, Any]]) -> str:
        if not self.active:
            return self.reason
        run = self.runs.get(TRANSFORMER)
        if run is not None and not run.complete:
            return f"the transformer's k-fold CV stopped ({run.stopped})"
        if self.transformer_plan is not None and not self.transformer_plan.get("run"):
            if candidates.get(TRANSFORMER, {}).get("status") == "trained":
                return f"the transformer was not cross-validated: {self.transformer_plan['reason']}"
        return "char-cnn is scored on the validation split only"

    def scored_on(self, by_cv: bool) -> str:
        if by_cv and self.folds is not None:
            return f"{self.folds.k}-fold cross-validation (mean of the fold scores)"
        return "validation split"

    # -- the ensemble on out-of-fold scores ---------------------------------------------------------
    def oof_probs(self) -> dict[str, np.ndarray]:
        """Both members' out-of-fold scores (called only when both ran every fold, so both are set)."""
        out: dict[str, np.ndarray] = {}
        for name in ensemble.MEMBERS:
            oof = self.runs[name].oof
            if oof is None:
                raise RuntimeError(f"{name} has no out-of-fold scores: its folds did not all run")
            out[name] = oof
        return out

    def oof_targets(self) -> np.ndarray:
        assert self.folds is not None
        return batching.encode_targets(
            self.task, [r.label for r in self.folds.rows], self.folds.labels, split="train"
        )

    def ensemble_summary(
        self, weight: float, probs: dict[str, np.ndarray], y: np.ndarray, calibrated: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The k folds' scores of the (calibrated) mix, as the ensemble is served."""
        assert self.folds is not None
        mixed = ensemble.combine(self.task, weight, probs[TRANSFORMER], probs[classical.FAMILY], calibrated)
        records = []
        for i in range(self.folds.k):
            held = self.folds.held_out(i)
            scores = ensemble.score_probs(self.task, mixed[held], y[held], self.folds.labels)
            records.append({"fold": i + 1, **numbers(scores)})
        return summary(self.task, records)

    # -- the refit ----------------------------------------------------------------------------------
    def refit(self, config: TrainConfig, callbacks: TrainCallbacks, candidate: dict[str, Any]) -> TrainResult:
        if self.refit_result is None:
            assert self.folds is not None
            run = self.runs[classical.FAMILY]
            self.refit_result = refit_classical(config, self.folds, run, self.cv_dir / "refit", callbacks)
            candidate["trained_tokens"] += int(self.refit_result.trained_tokens or 0)
            candidate["refit"] = {k: v for k, v in self.refit_result.hyperparameters["refit"].items()}
        return self.refit_result

    def record(self) -> dict[str, Any]:
        cv: dict[str, Any] = {"max_rows": self.kfold.max_rows}
        if self.folds is None:
            cv.update({"status": "off", "reason": self.reason})
        else:
            cv.update(self.folds.describe())
            cv["status"] = "done" if self.active else "stopped"
            if self.reason:
                cv["reason"] = self.reason
            if self.transformer_plan is not None:
                cv["transformer"] = self.transformer_plan
        return {"cv": cv}
