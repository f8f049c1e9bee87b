"""Vectors at scale (`python -m bench.search --ann`): exact float32 search against the
persistent index (`sentcli index build`) at f16, i8 and b1, with and without rescoring.

Rows: real sentences (4 to 60 words) split from the IMDB reviews (train, test, unlabelled)
and the AG News texts of DATA, embedded once with the default model and cached in CACHE;
1,000 held-out sentences of the same kind are the queries. A scale row adds noisy,
re-normalised copies of the real vectors up to --scale rows (build time, size, queries/s
and recall only: copies are not texts).

For each configuration: build time and rows/s, the index's size on disk and the part of it
that is RAM (the graph file, memory-mapped; the f16 vectors kept for rescoring are a
separate memory-mapped file and not counted), queries/s one query at a time and 1,000 as
one batch, recall@10 against exact float32 search, and paraphrase top-1: the STS-B
validation pairs scored 4 or more, each first sentence a query for its partner, hidden
among 3,000 AG News test texts and the other partners.

A last row per run, "b1 flat + rescore 4", ranks every row by the Hamming distance of its
centred 1-bit code (no graph) before the same rescoring: what the codes themselves allow, so
that the b1 rows' shortfall can be split between the codes and the graph. `--model RUN`
runs the same rows through another model (e.g. an imported all-MiniLM-L6-v2), cached apart.

Usage: python -m bench.search --ann [--data DIR] [--rows N] [--scale N] [--cache DIR]
                                    [--model RUN]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.embed import cpu_flags
from sentcli import api
from sentcli.config import InferenceOptions
from sentcli.inference import ann
from sentcli.inference.search import CorpusIndex, top_k
from sentcli.objectives.matryoshka import prefix

ROOT = Path(__file__).resolve().parent.parent
QUERIES = 1000
K = 10
CONFIGS = [("f16", 0, 0), ("i8", 0, 0), ("i8", 4, 0), ("b1", 0, 0), ("b1", 4, 0), ("i8", 4, 128)]
"""(index dtype, --rescore, dims: 0 the model's width; 128: each vector's first 128
dimensions re-normalised, as `--dims 128` gives; on the real rows only)."""
AT_SCALE = {("i8", 0, 0), ("i8", 4, 0), ("b1", 4, 0)}
"""The configurations of the scale row (an f16 graph of 1M rows takes ~10 min on 2 cores)."""


def _texts(data: Path) -> Iterator[str]:
    for name in ("imdb/train.csv.gz", "imdb/test.csv.gz", "ag_news/train.csv.gz"):
        with gzip.open(data / name, "rt", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                yield row["text"]
    with gzip.open(data / "imdb/unsup.txt.gz", "rt", encoding="utf-8") as f:
        yield from f


def sentences(data: Path, n: int) -> list[str]:
    """The first `n` distinct sentences of 4 to 60 words, in file order."""
    seen: dict[str, None] = {}
    for text in _texts(data):
        for s in re.split(r"(?<=[.!?])\s+", text.strip().replace("<br />", " ")):
            s = " ".join(s.split())
            if 4 <= len(s.split()) <= 60 and s not in seen:
                seen[s] = None
                if len(seen) == n:
                    return list(seen)
    raise SystemExit(f"{data}: only {len(seen):,} sentences; asked for {n:,}")


def embed(texts: list[str], path: Path, model: str | None, dims: int | None = None) -> np.ndarray:
    """`texts`' vectors by `model` (None: the default model), cached at `path`."""
    if not path.exists():
        src = path.with_suffix(".txt")
        src.write_text("\n".join(texts) + "\n", "utf-8")
        api.embed(str(src), path, model, options=InferenceOptions(dims=dims))
    return np.load(path, mmap_mode="r")


def flat_b1(corpus: np.ndarray, queries: np.ndarray, k: int, rescore: int) -> np.ndarray:
    """Every row ranked by the Hamming distance of its 1-bit code, signs about the corpus
    mean as a b1 index takes them (the ±1 dot product ranks as Hamming distance does), the
    first k·rescore re-ranked by the float cosine: the codes' own recall, without a graph."""
    center = corpus.mean(axis=0, dtype=np.float64).astype(np.float32)
    codes = np.where(corpus > center, 1.0, -1.0).astype(np.float32)
    found = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), 100):  # 100 queries × the corpus at a time
        q = queries[i : i + 100]
        hamming = np.where(q > center, 1.0, -1.0).astype(np.float32) @ codes.T
        cand = np.argsort(-hamming, axis=1, kind="stable")[:, : k * rescore]
        cos = np.einsum("qd,qcd->qc", q, corpus[cand])
        found[i : i + 100] = np.take_along_axis(cand, np.argsort(-cos, axis=1)[:, :k], axis=1)
    return found


def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Today's exact search (`search --corpus`): sentcli's blocked top-k over float32."""
    offsets = np.zeros(len(corpus) + 1, dtype=np.int64)
    index = CorpusIndex(Path("."), corpus, offsets, np.zeros(0, np.uint8), None)
    return top_k(index, np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def per_second(fn: Any, queries: np.ndarray, single: int = 200) -> tuple[float, float]:
    """Queries/s one at a time (the first `single`) and as one batch."""
    start = time.perf_counter()
    for i in range(single):
        fn(queries[i : i + 1])
    one = single / (time.perf_counter() - start)
    start = time.perf_counter()
    fn(queries)
    return one, len(queries) / (time.perf_counter() - start)


def size_mb(folder: Path, names: set[str]) -> float:
    return sum((folder / n).stat().st_size for n in names if (folder / n).exists()) / 2**20


def paraphrase_pairs(data: Path) -> tuple[list[str], list[str], list[str]]:
    with gzip.open(data / "stsb/validation.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if float(r["score"]) >= 4]
    with gzip.open(data / "ag_news/test.csv.gz", "rt", encoding="utf-8", newline="") as f:
        distractors = [r["text"] for r in csv.DictReader(f)][:3000]
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], distractors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann", action="store_true")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--scale", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench-ann")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model", help="a run to embed with instead of the default model")
    args = parser.parse_args()
    cache = args.cache
    if args.model and cache == parser.get_default("cache"):  # never mix two models' vectors
        cache = cache.with_name(f"bench-ann-{Path(args.model).name}")
    cache.mkdir(parents=True, exist_ok=True)
    texts = sentences(args.data, args.rows + QUERIES)
    corpus_texts, query_texts = texts[QUERIES:], texts[:QUERIES]
    t0 = time.perf_counter()
    corpus = np.ascontiguousarray(embed(corpus_texts, cache / f"corpus{args.rows}.npy", args.model))
    queries = np.ascontiguousarray(embed(query_texts, cache / "queries.npy", args.model))
    print(f"CPU flags: {' '.join(cpu_flags())}; {len(corpus):,} rows, {len(queries):,} queries")
    print(f"embedded (or read from {cache}) in {time.perf_counter() - t0:.0f} s", flush=True)
    results: list[dict[str, Any]] = []
    table = [
        "| rows | config | build (s) | rows/s | disk MB | RAM MB | q/s one | q/s batch "
        "| recall@10 | paraphrase top-1 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    a, b, distract = paraphrase_pairs(args.data)
    pa = np.asarray(embed(a, cache / "para_a.npy", args.model))
    pool = np.asarray(embed(b + distract, cache / "para_pool.npy", args.model))

    def para_top1(search: Any, q: np.ndarray = pa) -> float:
        top = search(q)
        return float(np.mean(top[:, 0] == np.arange(len(q))))

    for rows, vecs in [(len(corpus), corpus), (args.scale, None)]:
        if rows <= 0:
            continue
        if vecs is None:  # the scale row: noisy re-normalised copies of the real vectors
            rng = np.random.default_rng(0)
            reps = -(-rows // len(corpus))
            parts = [corpus] + [
                corpus + 0.05 * rng.standard_normal(corpus.shape).astype(np.float32)
                for _ in range(reps - 1)
            ]
            vecs = np.concatenate(parts)[:rows]
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        npy = cache / f"rows{rows}.npy"
        if not npy.exists():
            np.save(npy, vecs)
        truth = exact_top(vecs, queries, K)
        one, batch = per_second(lambda q, v=vecs: exact_top(v, q, K), queries)
        mb = vecs.nbytes / 2**20
        para = para_top1(lambda q: exact_top(pool, q, 1)) if rows == len(corpus) else None
        results.append({"rows": rows, "config": "f32 exact", "qps_one": one, "qps_batch": batch})
        table.append(
            f"| {rows:,} | f32 exact | – | – | {mb:.0f} | {mb:.0f} | {one:,.0f} | {batch:,.0f} "
            f"| 1.000 | {'' if para is None else f'{para:.3f}'} |"
        )
        print(table[-1], flush=True)
        built: dict[tuple[str, int], float] = {}
        for dtype, rescore, dims in CONFIGS:
            if rows != len(corpus) and (dtype, rescore, dims) not in AT_SCALE:
                continue
            source, qs, ppool, pq = npy, queries, "para_pool.npy", pa
            if dims:  # --dims: the first `dims` dimensions, re-normalised
                source = cache / f"rows{rows}.d{dims}.npy"
                if not source.exists():
                    np.save(source, prefix(vecs, dims))
                qs, pq = prefix(queries, dims), prefix(pa, dims)
                ppool = f"para_pool.d{dims}.npy"
                if not (cache / ppool).exists():
                    np.save(cache / ppool, prefix(pool, dims))
            folder = cache / f"rows{rows}.{dtype}.d{dims}.index"
            if (dtype, dims) not in built:
                start = time.perf_counter()
                api.index_build(str(source), folder, args.model, dtype=dtype, overwrite=True)
                built[dtype, dims] = time.perf_counter() - start
            took = built[dtype, dims]
            index = ann.open_index(folder)

            def run(q: np.ndarray, index: ann.AnnIndex = index, r: int = rescore) -> np.ndarray:
                return ann.search(index, q, K, r)[1]

            found = run(qs)
            one, batch = per_second(run, qs)
            disk = size_mb(folder, ann.INDEX_NAMES)
            ram = size_mb(folder, {ann.GRAPH})
            para = None
            if rows == len(corpus):
                pool_index = cache / f"para.{dtype}.d{dims}.index"
                api.index_build(
                    str(cache / ppool), pool_index, args.model, dtype=dtype, overwrite=True
                )
                pidx = ann.open_index(pool_index)
                para = para_top1(lambda q, p=pidx, r=rescore: ann.search(p, q, 1, r)[1], pq)
            name = f"{dtype} HNSW" + (f" + rescore {rescore}" if rescore else "")
            name += f", {dims} dims" if dims else ""
            rec = recall(found, truth)
            results.append({
                "rows": rows, "config": name, "build_s": took, "disk_mb": disk, "ram_mb": ram,
                "qps_one": one, "qps_batch": batch, "recall@10": rec, "paraphrase_top1": para,
            })  # fmt: skip
            shown = "" if para is None else f"{para:.3f}"
            table.append(
                f"| {rows:,} | {name} | {took:.1f} | {rows / took:,.0f} | {disk:.0f} | {ram:.0f} "
                f"| {one:,.0f} | {batch:,.0f} | {rec:.3f} | {shown} |"
            )
            print(table[-1], flush=True)
        if rows == len(corpus):
            rec = recall(flat_b1(vecs, queries, K, 4), truth)
            results.append({"rows": rows, "config": "b1 flat + rescore 4", "recall@10": rec})
            table.append(
                f"| {rows:,} | b1 flat + rescore 4 | – | – | – | – | – | – | {rec:.3f} | |"
            )
            print(table[-1], flush=True)
    print("\n".join(table))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
