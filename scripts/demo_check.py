"""The demo's last step: fail loudly (exit 1, one line) when its models do not do what the
demo shows. Checks, from the run folders `make demo` wrote:

- in the STS model's cosine matrix of data/sentences.txt (four paraphrase pairs, lines
  1-2, 3-4, ...), every sentence's nearest neighbour is its partner;
- each score in report/summary.json is at least its floor (FLOORS).

The floors sit under the scores measured on 2 CPU cores (docs/benchmarks.md, `make demo`)
with a margin, so that another CPU's rounding does not fail a sound run.

Usage: python -m scripts.demo_check DEMO_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {
    ("mtl", "topic", "accuracy"): 0.82,  # measured 0.854-0.856 (2 runs, 2026-12-07)
    ("mtl", "sentiment", "accuracy"): 0.72,  # measured 0.773-0.778
    ("sts", "sts", "spearman"): 0.68,  # measured 0.731
}
"""(run, task, score) → the lowest value the demo accepts."""


def problems(demo: Path) -> list[str]:
    from sentcli import api

    found = []
    for (run, task, key), floor in FLOORS.items():
        summary = json.loads((demo / run / "report" / "summary.json").read_text())
        value = summary["test"][task][key]
        if value < floor:
            found.append(f"{run} {task} {key} {value:.4f} is under its floor {floor}")
    texts, matrix, _ = api.similarity_matrix(str(ROOT / "data" / "sentences.txt"), demo / "sts")
    m = np.array(matrix, dtype=np.float64)
    np.fill_diagonal(m, -np.inf)
    for i, j in enumerate(np.argmax(m, axis=1)):
        partner = i ^ 1  # lines 1-2, 3-4, …: 0-based i and i ^ 1
        if j != partner:
            found.append(f"sentence {i + 1}'s nearest is {j + 1}, not its paraphrase {partner + 1}")
    return found


def main() -> None:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
    found = problems(demo)
    if found:
        print(f"demo check failed: {'; '.join(found)}", file=sys.stderr)
        sys.exit(1)
    floors = ", ".join(f"{t} {k} ≥ {f}" for (_, t, k), f in FLOORS.items())
    print(f"demo check passed: every sentence's nearest neighbour is its paraphrase; {floors}")


if __name__ == "__main__":
    main()
