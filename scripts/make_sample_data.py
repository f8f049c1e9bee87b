"""Make the small real samples shipped in data/ from the offline copies in ../shared/data.

Re-runnable and seeded: the same source files always give byte-identical samples.
Usage: python -m scripts.make_sample_data [--source ../shared/data] [--out data]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import random
import shutil
from pathlib import Path

SEED = 1234
IMDB_PER_CLASS = 1000  # per split and class: 2,000 train and 2,000 test reviews
UNSUP_LINES = 4000  # unlabelled IMDB reviews for pretraining
STSB_PAIRS = {"train": 2000, "validation": 750}  # scored sentence pairs (0-5)


def read_csv_gz(path: Path) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert header == ["text", "label"], f"{path}: unexpected header {header}"
        return [(row[0], row[1]) for row in reader]


def write_csv_gz(path: Path, rows: list[tuple[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    # mtime=0 keeps the gzip bytes identical from one run to the next
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(buf.getvalue().encode("utf-8"))


def balanced_sample(rows: list[tuple[str, str]], per_class: int, rng: random.Random) -> list:
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    picked = [r for label in sorted(by_label) for r in rng.sample(by_label[label], per_class)]
    rng.shuffle(picked)
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--source", type=Path, default=here.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=here / "data")
    args = parser.parse_args()
    src, out = args.source, args.out
    rng = random.Random(SEED)

    # AG News: the train sample and the full test set are small; ship them as they are.
    (out / "ag_news").mkdir(parents=True, exist_ok=True)
    for name in ("train.csv.gz", "test.csv.gz", "labels.txt"):
        shutil.copyfile(src / "ag_news" / name, out / "ag_news" / name)

    (out / "imdb").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = balanced_sample(read_csv_gz(src / "imdb" / f"{split}.csv.gz"), IMDB_PER_CLASS, rng)
        write_csv_gz(out / "imdb" / f"{split}.csv.gz", rows)
    shutil.copyfile(src / "imdb" / "labels.txt", out / "imdb" / "labels.txt")

    # The first UNSUP_LINES unlabelled reviews (ids 0..N-1), one per line.
    (out / "imdb_unsup").mkdir(parents=True, exist_ok=True)
    with gzip.open(src / "imdb" / "unsup.txt.gz", "rt", encoding="utf-8", newline="\n") as f:
        lines = [next(f) for _ in range(UNSUP_LINES)]
    with (
        open(out / "imdb_unsup" / "train.txt.gz", "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as g,
    ):
        g.write("".join(lines).encode("utf-8"))

    # STS Benchmark: seeded samples of the train and validation pairs, every column kept.
    (out / "stsb").mkdir(parents=True, exist_ok=True)
    for split, n in STSB_PAIRS.items():
        with gzip.open(src / "stsb" / f"{split}.csv.gz", "rt", encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
        assert header[:3] == ["sentence1", "sentence2", "score"], header
        picked = sorted(rng.sample(range(len(rows)), n))  # kept in the source's order
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows[i] for i in picked)
        with (
            open(out / "stsb" / f"{split}.csv.gz", "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as g,
        ):
            g.write(buf.getvalue().encode("utf-8"))

    # A few sentences for `sentcli similarity --matrix`: paraphrase pairs (score >= 4.5) of
    # the validation sample from three genres, each pair's sentences side by side.
    with gzip.open(out / "stsb" / "validation.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    sentences: list[str] = []
    for genre in ("main-captions", "main-news", "main-forums"):
        close = [r for r in rows if r[3] == genre and float(r[2]) >= 4.5][:2]
        sentences += [s for r in close for s in r[:2]]
    (out / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    # Three questions of our own about those sentences, for the `sentcli search` examples.
    questions = ["Someone is riding a horse.", "A snake is being fed.", "Who is the attorney?"]
    (out / "questions.txt").write_text("\n".join(questions) + "\n", encoding="utf-8")

    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(out)}\t{path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
