"""Data sources → `datasets.Dataset`s: local files (csv, tsv, jsonl/json, parquet, txt; also
.gz), folders of train/validation/test files and `hf:NAME`; and the file and column checks
that every reader shares (embed's streaming input too)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import socket
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from sentcli.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

TEXT_NAMES = ("text", "sentence", "review", "content")
LABEL_NAMES = ("label", "target", "class", "sentiment", "category")
BUILDERS = {
    ".txt": "text",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}
SPLIT_STEMS = {
    "train": ("train",),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
FIX_FORMATS = "give a .txt, .csv, .tsv, .jsonl, .json or .parquet file (optionally .gz)"


def datasets_lib() -> Any:
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


def check_file(
    path: Path,
    missing: str = "no such file or folder; check the path",
    not_a_file: str = FIX_FORMATS,
    empty: str = "give a file with at least one row",
    scan_gz: bool = True,
) -> None:
    """Cheap checks that give a clear message before a parser gives a deep one: the path
    exists, is a file and is not empty (with `scan_gz`, a .gz is read through, so truncation
    shows here)."""
    if not path.exists():
        raise DataError(f"{path}: {missing}")
    if not path.is_file():
        raise DataError(f"{path}: not a file; {not_a_file}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; {empty}")
    if scan_gz and path.suffix.lower() == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                if not f.read(1):
                    raise DataError(f"{path}: the file is empty; {empty}")
                while f.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip ({e}); re-create the file") from e


def pick_column(
    columns: Sequence[str],
    given: str | None,
    candidates: Sequence[str],
    what: str,
    where: str,
    *,
    say_what: bool = True,
    flag: str | None = None,
) -> str:
    """The column to read: `given` (which must exist), else the first of `candidates` found.
    `say_what` names the column's role in the message for a missing `given` one; `flag` is
    the option that sets it (default: --pair-columns, or --WHAT-column)."""
    flag = flag or ("--pair-columns" if what == "pair" else f"--{what}-column")
    if given is not None:
        if given not in columns:
            role = f"{what} " if say_what else ""
            raise DataError(
                f"{where}: no {role}column {given!r}; columns are {', '.join(columns)}; "
                f"pass {flag} with {'two' if flag == '--pair-columns' else 'one'} of them"
            )
        return given
    for name in candidates:
        if name in columns:
            return name
    raise DataError(
        f"{where}: no {what} column found (looked for {', '.join(candidates)}); columns are "
        f"{', '.join(columns)}; pass {flag} NAME"
    )


# a high surrogate escape not followed by a low one, or a low one not after a high one
_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_LONE = re.compile("[\ud800-\udfff]")


def lone_surrogate(raw: str, value: str, where: str, lineno: int) -> None:
    """Refuse a JSON line whose string values hold a lone UTF-16 surrogate (\\ud800…): valid
    JSON, but no text (it cannot be encoded as UTF-8), naming the file, line and column."""
    if "\\u" not in raw or not _LONE.search(value):  # only an escape can make one
        return
    found = _SURROGATE.search(raw)
    col = f", column {found.start() + 1}" if found else ""
    escape = found.group(0) if found else "a \\uD800-\\uDFFF escape"
    raise DataError(
        f"{where}: line {lineno}{col}: {escape} is half of a UTF-16 pair (a lone surrogate), "
        "not text; fix or drop that escape"
    )


def _first_surrogate_line(path: Path) -> DataError | None:
    """The first JSON line holding a lone surrogate, as the error to raise (error path only:
    pyarrow's JSON reader names only a byte position)."""
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", errors="replace")
            if not _SURROGATE.search(line):
                continue
            try:
                lone_surrogate(
                    line, json.dumps(json.loads(line), ensure_ascii=False), str(path), lineno
                )
            except DataError as e:
                return e
            except ValueError:
                return None
    return None


def absolute(source: str) -> str:
    """A local source's absolute path (hf:NAME and missing paths as given): what a run
    records, so that evaluate finds it from any folder."""
    return str(Path(source).resolve()) if Path(source).exists() else source


def _first_bad_utf8_line(path: Path) -> int | None:
    with open_binary(path) as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return None


def root_cause(e: BaseException) -> BaseException:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return e


def read_file(path: Path) -> Dataset:
    """One local file → a `datasets.Dataset` (memory-mapped Arrow)."""
    check_file(path)
    builder, kwargs = _format_of(path)
    ds_lib = datasets_lib()
    try:
        ds = ds_lib.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # datasets wraps parser errors in its own types
        cause = root_cause(e)
        # Parsers report bad bytes in many ways; find the line ourselves (error path only).
        line = _first_bad_utf8_line(path)
        if line is not None:
            raise DataError(
                f"{path}: bytes that are not UTF-8 (line {line}); re-encode the file as UTF-8 "
                "(for example with iconv -f latin1 -t utf-8)"
            ) from e
        surrogate = _first_surrogate_line(path) if builder == "json" else None
        if surrogate is not None:
            raise surrogate from e
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


def _hub(name: str) -> dict[str, Dataset]:
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
        dd = datasets_lib().load_dataset(repo, config or None)
    except Exception as e:
        msg = str(root_cause(e)).splitlines()[0][:200]
        fix = "check the name"
        if offline:
            fix = (
                "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set and it is not in your cache: "
                "unset them to download it, or pass a local file"
            )
        raise DataError(f"hf:{name}: cannot be loaded ({msg}); {fix}") from e
    return dict(dd)


def read_splits(source: str) -> tuple[dict[str, Dataset], list[str] | None]:
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
        twice = sorted(n for n, count in Counter(names).items() if count > 1)
        if twice:
            raise DataError(
                f"{labels_file}: {', '.join(map(repr, twice))} named more than once; give each "
                "class one line"
            )
    return splits, names


def first_row(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.index(mask, True).as_py()) + 1  # 1-based data row


def check_texts(ds: Dataset, column: str, where: str, flag: str = "--text-column") -> None:
    """The column holds strings and no row lacks one; `flag` is the option that names it."""
    col = ds.data.column(column)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(
            f"{where}: column {column!r} holds {col.type}, not text; "
            f"pass {flag} with the column that holds the texts"
        )
    if col.null_count:
        row = first_row(pc.is_null(col))
        raise DataError(f"{where}: row {row} has no text in column {column!r}; fill or drop it")
