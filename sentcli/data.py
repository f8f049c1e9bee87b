"""Data sources → `datasets.Dataset`s: files, folders and the hub; columns, labels, batching."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import socket
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tokenizers import Tokenizer

from sentcli.errors import DataError
from sentcli.tokenizer import MASK_ID, PAD_ID, SPECIAL_TOKENS, encode

TEXT_NAMES = ("text", "sentence", "review", "content")
LABEL_NAMES = ("label", "target", "class", "sentiment", "category")
BUILDERS = {".txt": "text", ".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json"}
BUILDERS[".parquet"] = "parquet"
SPLIT_STEMS = {"train": ("train",), "validation": ("validation", "valid", "dev", "val")}
SPLIT_STEMS["test"] = ("test",)
FIX_FORMATS = "give a .txt, .csv, .tsv, .jsonl, .json or .parquet file (optionally .gz)"


@dataclass
class TaskData:
    """A labelled task: splits with columns `text` (str) and `label` (int), and label names."""

    name: str
    source: str
    train: Any  # datasets.Dataset (kept as Any so importing this module stays cheap to type)
    validation: Any
    test: Any | None
    label_names: list[str]


def _datasets() -> Any:
    """Import `datasets` quietly (its progress bars would clutter our stderr)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    # Its parsers log each failure before raising; we turn the failure into one clear line.
    logging.getLogger("datasets").setLevel(logging.CRITICAL)
    return datasets


def extension(path: Path) -> str:
    """The format suffix (".csv", ".txt", …), looking through a final `.gz`."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def open_binary(path: Path) -> IO[bytes]:
    """`path` opened for reading bytes, decompressed when it ends in `.gz`."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _format_of(path: Path) -> tuple[str, dict[str, Any]]:
    ext = extension(path)
    if ext not in BUILDERS:
        raise DataError(f"{path}: unsupported file type {ext or '(none)'!r}; {FIX_FORMATS}")
    kwargs: dict[str, Any] = {}
    if BUILDERS[ext] == "csv":
        # keep_default_na=False: a text such as "NA" or "null" stays a text
        kwargs = {"keep_default_na": False, "sep": "\t" if ext == ".tsv" else ","}
    return BUILDERS[ext], kwargs


def _check_file(path: Path) -> None:
    """Cheap checks that give a clear message before `datasets` gives a deep one."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check the path")
    if not path.is_file():
        raise DataError(f"{path}: not a file; {FIX_FORMATS}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; give a file with at least one row")
    if path.suffix.lower() == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                if not f.read(1):
                    raise DataError(f"{path}: the file is empty; give a file with at least one row")
                while f.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip ({e}); re-create the file") from e


def _first_bad_utf8_line(path: Path) -> int | None:
    with open_binary(path) as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return None


def _root_cause(e: BaseException) -> BaseException:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return e


def read_file(path: Path) -> Any:
    """One local file → a `datasets.Dataset` (memory-mapped Arrow)."""
    _check_file(path)
    builder, kwargs = _format_of(path)
    ds_lib = _datasets()
    try:
        ds = ds_lib.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # datasets wraps parser errors in its own types
        cause = _root_cause(e)
        # Parsers report bad bytes in many ways; find the line ourselves (error path only).
        line = _first_bad_utf8_line(path)
        if line is not None:
            raise DataError(
                f"{path}: bytes that are not UTF-8 (line {line}); re-encode the file as UTF-8 "
                "(for example with iconv -f latin1 -t utf-8)"
            ) from e
        msg = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        if "corresponds to no data" in msg:  # only a header: datasets made no split
            raise DataError(f"{path}: no rows; give a file with at least one row") from e
        raise DataError(f"{path}: cannot be parsed as {builder} ({msg}); fix the file") from e
    if len(ds) == 0:
        raise DataError(f"{path}: no rows; give a file with at least one row")
    return ds


def _find_split_file(folder: Path, split: str) -> Path | None:
    for stem in SPLIT_STEMS[split]:
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.split(".")[0] == stem)
        if found:
            return found[0]
    return None


def _hub(name: str) -> dict[str, Any]:
    """`hf:NAME[:CONFIG]` through `datasets.load_dataset`; fails at once when offline."""
    repo, _, config = name.partition(":")
    offline = (
        os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    )
    if not offline:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
        except OSError as e:
            raise DataError(
                f"hf:{name}: the Hugging Face hub cannot be reached ({e}); download the data "
                "and pass a local file, or set HF_DATASETS_OFFLINE=1 to use your cache"
            ) from e
    try:
        dd = _datasets().load_dataset(repo, config or None)
    except Exception as e:
        msg = str(_root_cause(e)).splitlines()[0][:200]
        fix = "check the name"
        if offline:
            fix = (
                "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set and it is not in your cache: "
                "unset them to download it, or pass a local file"
            )
        raise DataError(f"hf:{name}: cannot be loaded ({msg}); {fix}") from e
    return dict(dd)


def read_splits(source: str) -> tuple[dict[str, Any], list[str] | None]:
    """A source (file, folder or hf:NAME) → its splits and the label names of labels.txt."""
    if source.startswith("hf:"):
        return _hub(source[3:]), None
    path = Path(source)
    if not path.is_dir():
        return {"train": read_file(path)}, None
    train = _find_split_file(path, "train")
    if train is None:
        raise DataError(
            f"{path}: folder has no train.* file; put the training rows in "
            f"{path}/train.csv (or .tsv/.jsonl/.json/.parquet/.txt, optionally .gz)"
        )
    splits = {"train": read_file(train)}
    for split in ("validation", "test"):
        found = _find_split_file(path, split)
        if found is not None:
            splits[split] = read_file(found)
    names = None
    labels_file = path / "labels.txt"
    if labels_file.exists():
        try:
            lines = labels_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataError(f"{labels_file}: not UTF-8; re-encode it as UTF-8") from e
        names = [line.strip() for line in lines if line.strip()]
        if not names:
            raise DataError(f"{labels_file}: empty; write one label name per line")
    return splits, names


def _pick_column(
    ds: Any, given: str | None, candidates: tuple[str, ...], what: str, src: str
) -> str:
    columns = list(ds.column_names)
    if given is not None:
        if given not in columns:
            raise DataError(
                f"{src}: no {what} column {given!r}; columns are {', '.join(columns)}; "
                f"pass --{what}-column with one of them"
            )
        return given
    for name in candidates:
        if name in columns:
            return name
    raise DataError(
        f"{src}: no {what} column found (looked for {', '.join(candidates)}); columns are "
        f"{', '.join(columns)}; pass --{what}-column NAME"
    )


def _first_row(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.index(mask, True).as_py()) + 1  # 1-based data row


def _check_texts(ds: Any, column: str, where: str) -> None:
    col = ds.data.column(column)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(
            f"{where}: column {column!r} holds {col.type}, not text; "
            "pass --text-column with the column that holds the texts"
        )
    if col.null_count:
        row = _first_row(pc.is_null(col))
        raise DataError(f"{where}: row {row} has no text in column {column!r}; fill or drop it")


def _label_ids(
    ds: Any, text_column: str, column: str, names: list[str] | None, where: str
) -> tuple[Any, list[str]]:
    """Columns `text` and `label` (int ids) from `ds`; returns the dataset and label names."""
    col = ds.data.column(column)
    if col.null_count:
        row = _first_row(pc.is_null(col))
        raise DataError(f"{where}: row {row} has no label in column {column!r}; fill or drop it")
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int64())
    if pa.types.is_integer(col.type):
        if names is None:
            names = [str(i) for i in range(int(pc.max(col).as_py()) + 1)]
        bad = pc.or_(pc.less(col, 0), pc.greater_equal(col, len(names)))
        if pc.any(bad).as_py():
            row = _first_row(bad)
            value = col[row - 1].as_py()
            raise DataError(
                f"{where}: row {row} has label {value}, outside 0..{len(names) - 1} "
                f"({len(names)} label names); fix the row or the labels.txt"
            )
        ids = col
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        values = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
        blank = pc.equal(values, "")
        if pc.any(blank).as_py():
            row = _first_row(blank)
            raise DataError(
                f"{where}: row {row} has no label in column {column!r}; fill or drop it"
            )
        if names is None:
            names = sorted(pc.unique(values).to_pylist())
        ids = pc.index_in(values, value_set=pa.array(names, pa.string()))
        if ids.null_count:
            row = _first_row(pc.is_null(ids))
            raise DataError(
                f"{where}: row {row} has label {values[row - 1].as_py()!r}, which is not one of "
                f"{', '.join(names)}; fix the row or add the name to labels.txt"
            )
    else:
        raise DataError(
            f"{where}: label column {column!r} holds {col.type}, not integers or strings "
            "(numbers and strings mixed, or floats?); make every label an integer id or every "
            "label a name, or pass --label-column to pick another column"
        )
    table = pa.table({"text": ds.data.column(text_column), "label": pc.cast(ids, pa.int64())})
    # An explicit fingerprint: otherwise `datasets` pickles the whole table to hash it (slow
    # on big data, and it fails under some dill/pyarrow versions).
    key = f"{ds._fingerprint}|{text_column}|{column}|{names}"
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
    return _datasets().Dataset(table, fingerprint=fingerprint), names


def _labelled(
    ds: Any, text_column: str | None, label_column: str | None, names: list[str] | None, where: str
) -> tuple[Any, list[str]]:
    """Find and check the text and label columns of one split; map its labels to ids."""
    tcol = _pick_column(ds, text_column, TEXT_NAMES, "text", where)
    lcol = _pick_column(ds, label_column, LABEL_NAMES, "label", where)
    _check_texts(ds, tcol, where)
    return _label_ids(ds, tcol, lcol, names, where)


def load_task(
    name: str,
    source: str,
    text_column: str | None = None,
    label_column: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 1337,
    label_names: list[str] | None = None,
) -> TaskData:
    """Load a labelled task; every problem is a `DataError` naming the file, row and fix."""
    splits, names = read_splits(source)
    names = label_names or names
    out: dict[str, Any] = {}
    for split, ds in splits.items():
        out[split], names = _labelled(ds, text_column, label_column, names, f"{source} ({split})")
    assert names is not None
    if len(names) < 2:
        raise DataError(f"{source}: only one label ({names[0]}); a task needs at least two")
    validation = out.get("validation")
    train = out["train"]
    if validation is None:
        if len(train) < 2:
            raise DataError(f"{source}: too few rows ({len(train)}) to hold out a validation split")
        parts = train.train_test_split(test_size=val_fraction, seed=seed)
        train, validation = parts["train"], parts["test"]
    return TaskData(name, source, train, validation, out.get("test"), names)


def load_eval_split(
    name: str,
    source: str,
    text_column: str | None,
    label_column: str | None,
    label_names: list[str],
) -> tuple[str, Any]:
    """The rows to evaluate a trained task on: the test split, else validation, else all of
    train (a plain file), with labels mapped to the model's label names."""
    splits, names = read_splits(source)
    if names is not None and names != label_names:
        raise DataError(
            f"{source}: labels.txt ({', '.join(names)}) differs from the model's labels for "
            f"task {name} ({', '.join(label_names)}); evaluate with data of the same labels"
        )
    split = next(s for s in ("test", "validation", "train") if s in splits)
    where = f"{source} ({split})"
    return split, _labelled(splits[split], text_column, label_column, label_names, where)[0]


def load_texts(sources: list[str], text_column: str | None = None) -> list[tuple[str, Any]]:
    """Unlabelled texts for tokenizers and pretraining: (split, Dataset with column `text`).

    A folder's test split is left out, so pretraining never sees the texts it is judged on.
    """
    out = []
    for source in sources:
        splits, _ = read_splits(source)
        for split, ds in splits.items():
            if split == "test":
                continue
            where = f"{source} ({split})"
            col = _pick_column(ds, text_column, TEXT_NAMES, "text", where)
            _check_texts(ds, col, where)
            ds = ds.select_columns([col])
            out.append((split, ds if col == "text" else ds.rename_column(col, "text")))
    return out


def iter_text_batches(
    ds: Any, batch_size: int = 1000, skip_empty: bool = True
) -> Iterator[list[str]]:
    """The texts of a dataset's `text` column in batches; `skip_empty` drops blank ones
    (right for tokenizers and pretraining, wrong where rows must stay aligned with labels)."""
    for start in range(0, len(ds), batch_size):
        batch = ds[start : start + batch_size]["text"]
        if skip_empty:
            batch = [t for t in batch if t and not t.isspace()]
        if batch:
            yield batch


def parse_task_spec(spec: str) -> tuple[str, str]:
    """`NAME=SOURCE` → (name, source)."""
    name, sep, source = spec.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise DataError(f"task {spec!r} is not NAME=SOURCE; write e.g. --task topic=data/ag_news")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise DataError(f"task name {name!r} must be letters, digits, '-' or '_'")
    return name.strip(), source.strip()


def length_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Index batches of similar length, so little padding is computed.

    With `rng`: shuffle, sort by length within windows of 50 batches, shuffle the batch order
    (random but length-homogeneous). Without: sorted by length (evaluation).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = rng.permutation(len(lengths))
        window = batch_size * 50
        order = np.concatenate(
            [
                chunk[np.argsort(lengths[chunk], kind="stable")]
                for chunk in np.array_split(order, max(1, -(-len(order) // window)))
            ]
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id arrays → (input_ids [B, T] int64, attention_mask [B, T] bool)."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = True
    return torch.from_numpy(ids), torch.from_numpy(mask)


def pack_blocks(token_arrays: list[np.ndarray], block_size: int) -> np.ndarray:
    """Concatenate texts into one stream and cut windows of block_size + 1 tokens.

    Windows step by block_size, so every token is a prediction target once. [N, block_size+1]
    """
    stream = np.concatenate(token_arrays) if token_arrays else np.zeros(0, dtype=np.int32)
    n = (len(stream) - 1) // block_size
    if n < 1:
        return np.zeros((0, block_size + 1), dtype=np.int32)
    windows = np.lib.stride_tricks.sliding_window_view(stream, block_size + 1)
    return np.ascontiguousarray(windows[: n * block_size : block_size])


def split_texts(
    sources: list[str], text_column: str | None, val_fraction: float, seed: int
) -> tuple[list[Any], list[Any]]:
    """Train and validation texts: the sources' own validation splits, else a seeded share
    of every train split."""
    parts = load_texts(sources, text_column)
    train = [ds for split, ds in parts if split == "train"]
    val = [ds for split, ds in parts if split == "validation"]
    if val:
        return train, val
    if sum(len(ds) for ds in train) < 2:
        raise DataError(f"{', '.join(sources)}: too few texts to pretrain on")
    splits = [ds.train_test_split(test_size=val_fraction, seed=seed) for ds in train]
    return [s["train"] for s in splits], [s["test"] for s in splits]


def pack_texts(tok: Tokenizer, parts: list[Any], block_size: int, what: str) -> np.ndarray:
    arrays = [
        ids for ds in parts for batch in iter_text_batches(ds, 10_000) for ids in encode(tok, batch)
    ]
    blocks = pack_blocks(arrays, block_size)
    if len(blocks) == 0:
        n = sum(len(a) for a in arrays)
        raise DataError(
            f"the {what} texts give {n} tokens, fewer than one block of {block_size + 1}; "
            "give more text or a smaller --block-size"
        )
    return blocks


def mask_tokens(
    ids: torch.Tensor, probability: float, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `probability` of the non-special tokens as targets; of those 80 %
    become [MASK], 10 % a random token, 10 % stay. Returns (inputs, targets with -100)."""
    n_special = len(SPECIAL_TOKENS)  # never masked, never drawn as random replacements
    chosen = (torch.rand(ids.shape, device=ids.device) < probability) & (ids >= n_special)
    targets = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, device=ids.device)
    random_ids = torch.randint(n_special, vocab_size, ids.shape, device=ids.device)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, MASK_ID), ids)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, targets


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def encode_rows(tok: Tokenizer, ds: Any, max_length: int) -> list[np.ndarray]:
    """Token ids of every row (blank texts included, so rows stay aligned with labels)."""
    batches = iter_text_batches(ds, 10_000, skip_empty=False)
    return [ids for batch in batches for ids in encode(tok, batch, max_length)]


def cut_train(td: TaskData, n: int, seed: int) -> None:
    if n and len(td.train) > n:
        td.train = td.train.shuffle(seed=seed).select(range(n))
