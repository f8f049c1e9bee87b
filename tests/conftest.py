"""Shared fixtures: a tokenizer trained in-process on real texts, tiny configs, small files."""

import os

# Under pytest-xdist (make test: two workers on two cores) each worker and every process it
# starts uses one thread: two threads each would oversubscribe the cores, and the tiny models
# here are bound by Python, not by the matmuls. Set before torch is imported.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
# pytest-xdist starts its workers with COLUMNS=80 and LINES=24 (a shell may export them too),
# which rich's consoles, made when sentcli.cli is imported, would keep whatever width a
# test's CliRunner gives them
if "COLUMNS" in os.environ or "LINES" in os.environ:
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)

from pathlib import Path  # noqa: E402

import pytest
from tokenizers import Tokenizer

from sentcli.config import ModelConfig
from sentcli.tokenizer import train_tokenizer

from helpers import DATA, ROOT, TINY, read_rows, task_dir


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


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The README and --help examples' folders (test_examples*.py), each holding the shipped
    data/; one pair per test module."""
    folders = {}
    for name in ("readme", "help"):
        folder = tmp_path_factory.mktemp(name)
        (folder / "data").symlink_to(ROOT / "data")
        folders[name] = folder
    return folders
