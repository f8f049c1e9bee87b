"""What the tests share besides fixtures: the shipped data, tiny run settings, CSV helpers."""

import csv
import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.0}
# Options for tiny, quick CPU runs through api.* and the CLI.
FAST = {**TINY, "device": "cpu", "precision": "fp32", "batch_size": 8, "warmup": 2}
# The same settings as command-line flags (plus --quiet).
FAST_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items() if k != "dropout"] + [
    "--quiet"
]


def read_rows(path: Path, n: int) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [(row[0], row[1]) for _, row in zip(range(n), reader, strict=False)]


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


def digests(*roots: Path) -> dict[Path, str]:
    """The sha256 of every file under `roots`: what a refused command must leave as it was."""
    import hashlib

    files = (p for root in roots for p in sorted(root.rglob("*")) if p.is_file())
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_refused(result: object, message: str) -> None:
    """A refused command (a CliRunner result): exit 2, one `error:` line on stderr holding
    `message`, no traceback."""
    code, stderr = getattr(result, "exit_code"), getattr(result, "stderr")  # noqa: B009
    assert code == 2, getattr(result, "output")  # noqa: B009
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0], stderr
    assert "Traceback" not in getattr(result, "output")  # noqa: B009
