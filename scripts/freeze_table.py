"""What a freeze mode costs and buys, in one table: `train-mtl` continued from the demo's
multi-task run for the same few steps under `--freeze none`, `backbone` and `head:topic`,
each from the same weights. Per mode: the parameters it trains, the seconds it took, each
task's validation accuracy after the steps and its change from before them (a frozen
head's task can still move, or be forgotten, when the encoder under it trains).

The tasks read the shipped training files without their test splits (copied into
DEMO/freeze-data/), so each run scores its validation split, the same seeded rows the
multi-task run held out, before and after its steps, and skips the 9,600-text test pass
that took most of the table's time.

Usage: python -m scripts.freeze_table DEMO_FOLDER [--steps N]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from sentcli import api
from sentcli.config import TaskConfig
from sentcli.events import EvalLog, Groups

ROOT = Path(__file__).resolve().parent.parent
MODES = ["none", "backbone", "head:topic"]
TASKS = {"topic": "ag_news", "sentiment": "imdb"}
"""Each task and its shipped source under data/."""


def sources(demo: Path) -> list[TaskConfig]:
    """Each task's training file and labels, without its test split, under DEMO/freeze-data."""
    specs = []
    for task, folder in TASKS.items():
        target = demo / "freeze-data" / folder
        target.mkdir(parents=True, exist_ok=True)
        for name in ("train.csv.gz", "labels.txt"):
            shutil.copyfile(ROOT / "data" / folder / name, target / name)
        specs.append(TaskConfig(task, str(target)))
    return specs


def run(demo: Path, mode: str, steps: int, specs: list[TaskConfig]) -> dict[str, Any]:
    groups: list[Groups] = []
    evals: list[EvalLog] = []

    def keep(event: object) -> None:
        if isinstance(event, Groups):
            groups.append(event)
        elif isinstance(event, EvalLog):
            evals.append(event)

    options = {"freeze": mode, "max_steps": steps, "lr": 3e-4, "warmup": 5, "log_every": 10}
    start = time.perf_counter()
    api.train_mtl(
        specs, demo / f"freeze-{mode.replace(':', '-')}", init=demo / "mtl",
        options=options, overwrite=True, on_event=keep,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    trainable = sum(n for _, n, trains in groups[0].groups if trains) if groups else 0
    before, after = evals[0].metrics, evals[-1].metrics  # epoch -1, and after the last step
    accuracy = {t: (after[f"{t}/accuracy"], before[f"{t}/accuracy"]) for t in TASKS}
    return {"mode": mode, "trainable": trainable, "seconds": seconds, "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    specs = sources(args.demo)
    rows = [run(args.demo, mode, args.steps, specs) for mode in MODES]
    start = " | ".join(f"{t} {rows[0]['accuracy'][t][1]:.4f}" for t in TASKS)
    print(
        f"\nfreeze modes: {args.steps} more steps of train-mtl from {args.demo / 'mtl'}; "
        f"validation accuracy (before: {start})"
    )
    print("| --freeze | trains | seconds | " + " | ".join(f"{t} (change)" for t in TASKS) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(TASKS))
    for r in rows:
        cells = [f"{now:.4f} ({now - was:+.4f})" for now, was in r["accuracy"].values()]
        print(f"| {r['mode']} | {r['trainable']:,} | {r['seconds']:.0f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
