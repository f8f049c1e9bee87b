"""`sentcli search`: the time to embed a corpus, the time to search it, and peak memory at
two corpus sizes (flat memory: the corpus vectors are read block by block, never held).

Queries are STS-B validation first sentences; the corpus is the sentences (4+ words) of the
unlabelled IMDB reviews. Each size runs in a fresh process (its own peak resident memory,
VmHWM), twice: cold (the corpus is embedded into an empty cache, then searched) and warm
(the cached vectors are searched). Model: the default model unless --model.

Usage: python -m bench.search [--quick] [--model RUN] [--queries N] [--sizes N,N]
       python -m bench.search --ann [...]: the persistent index (bench/ann.py)
  --quick: the shipped samples, 200 queries, corpora of 5,000 and 20,000 lines
  default: ../shared/data, 1,000 queries, corpora of 25,000 and 100,000 lines
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from sentcli import api
from sentcli.inference.search import top_k
queries, corpus, cache, out, model = sys.argv[1:6]
model = Path(model) if model else None
start = time.perf_counter()
result, index = api.search(queries, corpus, Path(out), model, k=10, cache=Path(cache))
total = time.perf_counter() - start
api.embed(queries, Path(out + ".npy"), model)
q = np.load(out + ".npy")
start = time.perf_counter()
top_k(index, q, 10)
search = time.perf_counter() - start
hwm = [x for x in open("/proc/self/status") if x.startswith("VmHWM")][0].split()[1]
print(json.dumps({
    "total_s": total, "rows": len(index), "queries": len(q), "search_s": search,
    "index_s": index.built.stats.seconds if index.built else None,
    "peak_mb": int(hwm) / 1024,
}))
"""


def sentences(path: Path, n: int) -> list[str]:
    out: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for review in f:
            for s in re.split(r"(?<=[.!?])\s+", review.strip().replace("<br />", " ")):
                if len(s.split()) >= 4:
                    out.append(s)
                    if len(out) == n:
                        return out
    raise SystemExit(f"{path}: only {len(out):,} sentences; asked for {n:,}")


def main() -> None:
    if "--ann" in sys.argv:  # the persistent index against exact search: bench/ann.py
        from bench import ann

        ann.main()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="")
    parser.add_argument("--queries", type=int)
    parser.add_argument("--sizes", help="two corpus sizes, e.g. 25000,100000")
    args = parser.parse_args()
    data = ROOT / "data" if args.quick else ROOT.parent / "shared" / "data"
    unsup = data / ("imdb_unsup/train.txt.gz" if args.quick else "imdb/unsup.txt.gz")
    n_queries = args.queries or (200 if args.quick else 1000)
    default_sizes = "5000,20000" if args.quick else "25000,100000"
    sizes = [int(x) for x in (args.sizes or default_sizes).split(",")]
    work = Path(tempfile.mkdtemp(prefix="search_"))
    with gzip.open(data / "stsb/validation.csv.gz", "rt", encoding="utf-8", newline="") as f:
        queries = [r["sentence1"] for r in csv.DictReader(f)][:n_queries]
    (work / "queries.txt").write_text("\n".join(queries) + "\n", "utf-8")
    corpus = sentences(unsup, max(sizes))
    print(f"{len(queries):,} queries; corpus: IMDB sentences ({unsup}); work in {work}")
    print("| corpus rows | embed corpus (s) | texts/s | search (s) | cold peak MB | warm peak MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in sizes:
        path = work / f"corpus{size}.txt"
        path.write_text("\n".join(corpus[:size]) + "\n", "utf-8")
        runs = []
        for _ in ("cold", "warm"):
            cmd = [sys.executable, "-c", CHILD, str(work / "queries.txt"), str(path)]
            cmd += [str(work / f"cache{size}"), str(work / f"out{size}.tsv"), args.model]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        cold, warm = runs
        assert cold["rows"] == size and warm["index_s"] is None
        print(
            f"| {size:,} | {cold['index_s']:.1f} | {size / cold['index_s']:,.0f} "
            f"| {warm['search_s']:.2f} | {cold['peak_mb']:.0f} | {warm['peak_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
