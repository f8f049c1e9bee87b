"""What a freeze mode costs and buys, in one table: `train-mtl` continued from the demo's
multi-task run for the same few steps under `--freeze none`, `backbone` and `head:topic`,
each from the same weights. Per mode: the parameters it trains, the seconds it took
(training and the test pass), each task's test accuracy and its change from the start
(a frozen head's task can still move, or be forgotten, when the encoder under it trains).

Usage: python -m scripts.freeze_table DEMO_FOLDER [--steps N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from sentcli import api
from sentcli.config import TaskConfig
from sentcli.events import Groups

ROOT = Path(__file__).resolve().parent.parent
MODES = ["none", "backbone", "head:topic"]
TASKS = {"topic": "ag_news", "sentiment": "imdb"}
"""Each task and its shipped source under data/."""


def run(demo: Path, mode: str, steps: int) -> dict[str, Any]:
    groups: list[Groups] = []

    def keep(event: object) -> None:
        if isinstance(event, Groups):
            groups.append(event)

    specs = [TaskConfig(t, str(ROOT / "data" / d)) for t, d in TASKS.items()]
    options = {"freeze": mode, "max_steps": steps, "lr": 3e-4, "warmup": 5, "log_every": 10}
    start = time.perf_counter()
    result = api.train_mtl(
        specs, demo / f"freeze-{mode.replace(':', '-')}", init=demo / "mtl",
        options=options, overwrite=True, on_event=keep,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    trainable = sum(n for _, n, trains in groups[0].groups if trains) if groups else 0
    accuracy = {t: result.test[t]["accuracy"] for t in TASKS}
    return {"mode": mode, "trainable": trainable, "seconds": seconds, "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    before = json.loads((args.demo / "mtl" / "report" / "summary.json").read_text())["test"]
    rows = [run(args.demo, mode, args.steps) for mode in MODES]
    start = " | ".join(f"{t} {before[t]['accuracy']:.4f}" for t in TASKS)
    print(
        f"\nfreeze modes: {args.steps} more steps of train-mtl from {args.demo / 'mtl'} ({start})"
    )
    print("| --freeze | trains | seconds | " + " | ".join(f"{t} (change)" for t in TASKS) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(TASKS))
    for r in rows:
        cells = [
            f"{r['accuracy'][t]:.4f} ({r['accuracy'][t] - before[t]['accuracy']:+.4f})"
            for t in TASKS
        ]
        print(f"| {r['mode']} | {r['trainable']:,} | {r['seconds']:.0f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
