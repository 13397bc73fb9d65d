"""The transformer alone on the sets where `auto`'s budget left it no run (issue #17 item 7's "each family alone").

    python -m bench.quality.alone --sets tweets news20 --epochs 1

Reads bench/results/quality.json, and for each named set trains MiniLM-L6 on its own
(`train_family("transformer")`, no time budget, `--epochs` epochs, every other setting at its
default) on the same split as run.py (seed 0, same subsample), scores it on the same test split,
stores it as the set's `transformer_alone` (never as auto's candidate), recomputes the targets
and rewrites the README section. Sets whose text MiniLM cannot read (auto's [UNK] check) are left.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from bench.quality import score
from bench.quality.report import readme_section, replace_intro
from bench.quality.run import LIMITS, README, RESULTS, _Log, _split
from bench.quality.targets import targets

log = logging.getLogger("bench.quality")


def transformer_alone(name: str, epochs: int, work_root: Path) -> dict:
    from aiaas.training import TrainConfig
    from aiaas.training.families import train_family

    _, data, test_texts, labels, truth, _ = _split(name, LIMITS[name])
    started = time.perf_counter()
    config = TrainConfig(base_model="minilm-l6", n_epochs=epochs)
    result = train_family("transformer", config, data, work_root / name, _Log(name))
    wall = time.perf_counter() - started
    out, _ = score.family_scores("transformer", result.model_dir, test_texts, truth, len(labels))
    return {**out, "epochs": epochs, "wall_s": round(wall, 1), "time_budget_s": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-quality-alone-") as tmp:
        for name in args.sets:
            report = json.loads(RESULTS.read_text())
            report["datasets"][name]["transformer_alone"] = transformer_alone(name, args.epochs, Path(tmp))
            report["targets"] = targets(report)
            RESULTS.write_text(json.dumps(report, indent=2) + "\n")
            log.info("%s: transformer alone %s", name, report["datasets"][name]["transformer_alone"])
    replace_intro(README, readme_section(report))


if __name__ == "__main__":
    main()
