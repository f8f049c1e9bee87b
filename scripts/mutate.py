"""Mutation testing of the core modules (`make mutate`): mutmut 3 mutates each module, runs
each mutant against the unit tests that reach it (pyproject.toml's [tool.mutmut] selection;
mutmut picks, per mutated function, the selected tests that call it) and this script prints
the score per module. A module with more mutants than --sample gets a seeded random sample
of them (the same sample on every run of the same code).

Usage: python -m scripts.mutate [--sample 150] [--seed 0] [--only NAME,...] [--children 2]

Not part of CI (about 25 minutes on 2 cores): run it before a release and after a refactor,
and put its table in docs/development.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = [sys.executable, "-m", "mutmut"]

CORE: dict[str, list[str]] = {
    "model": ["sentcli.model.*"],
    "freeze": ["sentcli.freeze.*"],
    # the computations; the plots are checked by looking at them
    "metrics": [
        f"sentcli.metrics.x_{f}__*"
        for f in ("classification_metrics", "history_of", "throughput", "grad_warnings")
    ]
    + ["sentcli.metrics.x_grad_summary__*"],
    "objectives": [
        "sentcli.training.similarity.*",
        "sentcli.training.distill.x_distill_loss__*",
        "sentcli.training.classify.x_weighted_loss__*",
        "sentcli.training.classify.x_plan_steps__*",
    ],
    "masking": ["sentcli.training.lm.x_mask_tokens__*"],
    "batching": ["sentcli.data.batching.*"],
    "similarity": ["sentcli.inference.similarity.*"],
    "search": ["sentcli.inference.search.*"],
}
"""Each core module's mutants, as mutmut names them (module.x_function__mutmut_N, or
module.xǁClassǁmethod__mutmut_N)."""

EQUIVALENT: dict[str, str] = {}
"""Mutants that cannot change behaviour, with the reason (names as of the commit whose
figures docs/development.md gives; mutmut numbers them per function)."""

KILLED = {"killed", "timeout", "segfault", "suspicious"}
"""A timeout or a crash also fails the tests."""


def results() -> dict[str, str]:
    """Every generated mutant's status, by name."""
    done = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    )
    found = re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", done.stdout, re.M)
    return {name: status.strip() for name, status in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=150, help="mutants per module at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated modules of CORE")
    parser.add_argument("--children", type=int, default=2, help="mutants run at once")
    args = parser.parse_args()
    modules = [m for m in CORE if not args.only or m in args.only.split(",")]
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)  # a fresh copy of today's code
    # generate every mutant (a filter that matches none stops mutmut right after)
    subprocess.run([*MUTMUT, "run", "-"], cwd=ROOT, capture_output=True)
    every = sorted(results())
    chosen: dict[str, list[str]] = {}
    for m in modules:
        names = [n for n in every if any(fnmatch.fnmatchcase(n, p) for p in CORE[m])]
        rng = random.Random(f"{args.seed}:{m}")
        chosen[m] = sorted(rng.sample(names, min(args.sample, len(names))))
        print(f"{m}: {len(chosen[m])} of {len(names)} mutants", flush=True)
    run = [*MUTMUT, "run", "--max-children", str(args.children)]
    subprocess.run(run + [n for m in modules for n in chosen[m]], cwd=ROOT, check=False)
    status = results()
    print("\n| module | mutants run | killed | survived | no test | equivalent | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for m in modules:
        got = [status.get(n, "not run") for n in chosen[m]]
        equivalent = sum(n in EQUIVALENT for n in chosen[m])
        killed = sum(s in KILLED for s in got)
        survived = [n for n, s in zip(chosen[m], got, strict=True) if s == "survived"]
        untested = sum(s == "no tests" for s in got)
        real = len(got) - equivalent
        score = killed / real if real else 1.0
        print(
            f"| {m} | {len(got)} | {killed} | {len(survived) - equivalent} | {untested} | "
            f"{equivalent} | {100 * score:.1f} % |"
        )
    print("\nSurvivors (mutmut show NAME prints one):")
    for m in modules:
        for n in chosen[m]:
            if status.get(n) in ("survived", "no tests") and n not in EQUIVALENT:
                print(f"  {n}: {status[n]}")


if __name__ == "__main__":
    main()
