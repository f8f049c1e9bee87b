"""Shared fixtures: a tokenizer trained in-process on real texts, tiny configs, small files."""

import csv
import gzip
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from sentcli.config import ModelConfig
from sentcli.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.0}
# Options for tiny, quick CPU runs through api.* and the CLI.
FAST = {**TINY, "device": "cpu", "precision": "fp32", "batch_size": 8, "warmup": 2}


def read_rows(path: Path, n: int) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [(row[0], row[1]) for _, row in zip(range(n), reader, strict=False)]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [t for t, _ in read_rows(DATA / "ag_news" / "train.csv.gz", 400)]


@pytest.fixture(scope="session")
def tokenizer(texts: list[str]) -> Tokenizer:
    return train_tokenizer([texts], "bpe", vocab_size=400, min_frequency=2)


@pytest.fixture(scope="session")
def tokenizer_path(tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture
def tiny_config(tokenizer: Tokenizer) -> ModelConfig:
    return ModelConfig(vocab_size=tokenizer.get_vocab_size(), **TINY)


def write_csv(
    path: Path, rows: list[tuple[object, ...]], header: tuple[str, ...] = ("text", "label")
) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def task_dir(root: Path, dataset: str, n_train: int, n_test: int) -> Path:
    """A small real task folder: the first rows of a shipped dataset, and its labels.txt."""
    write_csv(root / "train.csv", read_rows(DATA / dataset / "train.csv.gz", n_train))
    write_csv(root / "test.csv", read_rows(DATA / dataset / "test.csv.gz", n_test))
    (root / "labels.txt").write_text((DATA / dataset / "labels.txt").read_text())
    return root


@pytest.fixture(scope="session")
def topic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 AG News train rows, 80 test rows."""
    return task_dir(tmp_path_factory.mktemp("topic"), "ag_news", 240, 80)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 IMDB train rows, 40 test rows."""
    return task_dir(tmp_path_factory.mktemp("sentiment"), "imdb", 120, 40)
