"""Streaming input and output for embed and predict.

Texts come in chunks from a line file, stdin or a csv/tsv/jsonl/parquet column; vectors and
labels go out as .npy (written row by row), JSON lines or csv/tsv. Memory is bounded by the
chunk size whatever the input's size, and row i of every output is input row i.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from sentcli.data import TEXT_NAMES, extension, open_binary
from sentcli.errors import ConfigError, DataError

TABLES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
VECTOR_FORMATS = (".npy", ".jsonl", ".csv", ".tsv")
NPY_HEADER = 128  # bytes reserved for the .npy header, rewritten with the final row count


@dataclass
class Chunk:
    """Consecutive input rows: their texts and, with --id-column, their ids."""

    texts: list[str]
    ids: list[Any] | None


def _line_text(raw: bytes, where: str, lineno: int) -> str:
    raw = raw[:-1] if raw.endswith(b"\n") else raw
    raw = raw[:-1] if raw.endswith(b"\r") else raw
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{where}: line {lineno} is not UTF-8 (byte {raw[e.start]:#04x}); re-encode the "
            "input as UTF-8 (for example with iconv -f latin1 -t utf-8)"
        ) from None


class TextInput:
    """One input: `-` (stdin) or a file. The constructor checks what it can before any work
    (existence, emptiness, UTF-8 and row count of line files, columns of tables)."""

    def __init__(
        self,
        spec: str,
        text_column: str | None = None,
        id_column: str | None = None,
        stdin: IO[bytes] | None = None,
    ) -> None:
        self.name = "stdin" if spec == "-" else spec
        self.text_column = text_column
        self.id_column = id_column
        self.total: int | None = None  # rows, when known before reading
        self._stdin = stdin
        self.path = Path(spec)
        self.kind = "lines" if spec == "-" else TABLES.get(extension(self.path), "lines")
        if self.kind == "lines" and (text_column or id_column):
            raise ConfigError(
                f"{self.name} is read as one text per line; --text-column and --id-column "
                "apply to .csv, .tsv, .jsonl and .parquet input"
            )
        if spec != "-":
            self._check_file()
        if self.kind == "lines" and spec != "-":
            self.total = self._scan_lines()
        elif self.kind != "lines":
            self._check_columns()

    def _check_file(self) -> None:
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file; check the path")
        if not self.path.is_file():
            raise DataError(f"{self.path}: not a file; give a text file, - for stdin, or a table")
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: the file is empty; give at least one line")

    def _scan_lines(self) -> int:
        """Count the lines and check they decode, before any output is written."""
        n = 0
        try:
            with open_binary(self.path) as f:
                for n, raw in enumerate(f, start=1):
                    _line_text(raw, self.name, n)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{self.path}: corrupt or truncated gzip ({e}); re-create it") from e
        if n == 0:
            raise DataError(f"{self.path}: the file is empty; give at least one line")
        return n

    def _pick(self, columns: list[str]) -> None:
        if self.text_column is None:
            found = [c for c in TEXT_NAMES if c in columns]
            if not found:
                raise DataError(
                    f"{self.name}: no text column found (looked for {', '.join(TEXT_NAMES)}); "
                    f"columns are {', '.join(columns)}; pass --text-column NAME"
                )
            self.text_column = found[0]
        for what, col in (("text", self.text_column), ("id", self.id_column)):
            if col is not None and col not in columns:
                raise DataError(
                    f"{self.name}: no column {col!r}; columns are {', '.join(columns)}; "
                    f"pass --{what}-column with one of them"
                )

    def _check_columns(self) -> None:
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(self.path)
            except Exception as e:  # pyarrow raises ArrowInvalid/OSError for foreign bytes
                raise DataError(f"{self.path}: not a parquet file ({e}); fix the file") from e
            self._pick(list(meta.schema_arrow.names))
            self.total = meta.metadata.num_rows
            if self.total == 0:
                raise DataError(f"{self.path}: no rows; give a file with at least one row")
            return
        rows = self._rows()
        first = next(rows, None)  # reads the header and one row
        rows.close()
        if first is None:
            raise DataError(f"{self.path}: no rows; give a file with at least one row")

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The rows in order, `size` at a time."""
        texts: list[str] = []
        ids: list[Any] = []
        n = 0
        for n, (text, row_id) in enumerate(self._rows(), start=1):
            texts.append(text)
            ids.append(row_id)
            if len(texts) == size:
                yield Chunk(texts, ids if self.id_column else None)
                texts, ids = [], []
        if texts:
            yield Chunk(texts, ids if self.id_column else None)
        if n == 0:  # files were checked up front; this is an empty stdin
            raise DataError(f"{self.name}: no input; give at least one line of text")

    def _rows(self) -> Generator[tuple[str, Any], None, None]:
        if self.kind == "lines":
            yield from self._lines()
        elif self.kind == "csv":
            yield from self._csv()
        elif self.kind == "jsonl":
            yield from self._jsonl()
        else:
            yield from self._parquet()

    def _lines(self) -> Iterator[tuple[str, Any]]:
        if self._stdin is not None or self.name == "stdin":
            stream = self._stdin if self._stdin is not None else _stdin_bytes()
            for n, raw in enumerate(stream, start=1):
                yield _line_text(raw, self.name, n), None
            return
        with open_binary(self.path) as f:
            for n, raw in enumerate(f, start=1):
                yield _line_text(raw, self.name, n), None

    def _csv(self) -> Iterator[tuple[str, Any]]:
        delimiter = "\t" if extension(self.path) == ".tsv" else ","
        with open_binary(self.path) as raw:
            reader = csv.reader(
                io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), delimiter=delimiter
            )
            row_no = 0
            try:
                header = next(reader, None)
                if header is None:
                    return
                self._pick(header)
                ti = header.index(self.text_column)  # type: ignore[arg-type]
                ii = header.index(self.id_column) if self.id_column else None
                for row_no, row in enumerate(reader, start=1):
                    if len(row) != len(header):
                        raise DataError(
                            f"{self.name}: row {row_no} has {len(row)} field(s), the header has "
                            f"{len(header)}; quote fields that hold the delimiter"
                        )
                    yield row[ti], (row[ii] if ii is not None else None)
            except UnicodeDecodeError:
                raise DataError(
                    f"{self.name}: bytes that are not UTF-8 after row {row_no}; re-encode the "
                    "file as UTF-8 (for example with iconv -f latin1 -t utf-8)"
                ) from None
            except csv.Error as e:
                raise DataError(f"{self.name}: row {row_no + 1} is not valid CSV ({e})") from None

    def _jsonl(self) -> Iterator[tuple[str, Any]]:
        with open_binary(self.path) as f:
            picked = False
            for n, raw in enumerate(f, start=1):
                line = _line_text(raw, self.name, n)
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(
                        f"{self.name}: line {n} is not JSON ({e.msg}); embed reads JSON Lines, "
                        "one object per line"
                    ) from None
                if not isinstance(obj, dict):
                    raise DataError(f"{self.name}: line {n} is not a JSON object")
                if not picked:
                    self._pick(list(obj))
                    picked = True
                text = obj.get(self.text_column)
                if not isinstance(text, str):
                    raise DataError(
                        f"{self.name}: line {n} has no text in {self.text_column!r} "
                        f"(got {type(text).__name__}); fill or drop it"
                    )
                if self.id_column is not None and self.id_column not in obj:
                    raise DataError(f"{self.name}: line {n} has no {self.id_column!r}")
                yield text, (obj[self.id_column] if self.id_column else None)

    def _parquet(self) -> Iterator[tuple[str, Any]]:
        import pyarrow.parquet as pq

        columns = [c for c in (self.text_column, self.id_column) if c is not None]
        row = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=8192, columns=columns):
            texts = batch.column(self.text_column).to_pylist()
            ids = batch.column(self.id_column).to_pylist() if self.id_column else None
            for i, text in enumerate(texts):
                row += 1
                if not isinstance(text, str):
                    raise DataError(
                        f"{self.name}: row {row} has no text in {self.text_column!r} "
                        f"(got {type(text).__name__}); fill or drop it"
                    )
                yield text, (ids[i] if ids is not None else None)


def _stdin_bytes() -> IO[bytes]:
    import sys

    return sys.stdin.buffer


# --- output -------------------------------------------------------------------------------


def check_output(path: Path | None, formats: tuple[str, ...], inputs: list[str]) -> None:
    """Refuse, before any work, an output that cannot be written or would eat the input."""
    if path is None:
        return
    if extension(path) not in formats or path.suffix.lower() == ".gz":
        raise ConfigError(
            f"-o {path}: unknown output format; end the name with {', '.join(formats)}"
        )
    if path.is_dir():
        raise ConfigError(f"-o {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"-o {path}: folder {path.parent} does not exist; create it first")
    for spec in inputs:
        if spec != "-" and Path(spec).exists() and path.exists() and path.samefile(spec):
            raise ConfigError(f"-o {path} is the input file; write to another file")


def _round(values: np.ndarray) -> list[Any]:
    # 7 decimals hold a float32's precision for |x| <= 1 and keep the lines short
    return np.round(values.astype(np.float64), 7).tolist()


class Sink(Protocol):
    def write(self, chunk: Chunk, values: np.ndarray) -> None: ...

    def close(self) -> None: ...


class NpyWriter:
    """float32 [N, D] .npy written row block by row block; the header (with N) is rewritten
    at close, so the whole matrix is never in memory."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.rows = 0
        self.dim: int | None = None
        f.write(b"\0" * NPY_HEADER)

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        self.dim = values.shape[1]
        self.f.write(np.ascontiguousarray(values, dtype="<f4").tobytes())
        self.rows += len(values)

    def close(self) -> None:
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.dim or 0)}
        text = repr(header).encode("latin1")
        text += b" " * (NPY_HEADER - 10 - len(text) - 1) + b"\n"
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
        self.f.seek(0, io.SEEK_END)


class JsonlVectorWriter:
    """One JSON object per row: {"text" or "id": …, "embedding": […]}."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        keys, key = (chunk.ids, "id") if chunk.ids is not None else (chunk.texts, "text")
        lines = (
            json.dumps({key: k, "embedding": v}, ensure_ascii=False)
            for k, v in zip(keys, _round(values), strict=True)
        )
        self.f.write(("\n".join(lines) + "\n").encode("utf-8"))

    def close(self) -> None:
        self.f.flush()


class CsvVectorWriter:
    """A header (text or id, then dim_0 … dim_{D-1}) and one row per input row."""

    def __init__(self, f: IO[bytes], delimiter: str) -> None:
        self.text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=True)
        self.writer = csv.writer(self.text, delimiter=delimiter)
        self.header_written = False

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        keys, key = (chunk.ids, "id") if chunk.ids is not None else (chunk.texts, "text")
        if not self.header_written:
            self.writer.writerow([key] + [f"dim_{i}" for i in range(values.shape[1])])
            self.header_written = True
        self.writer.writerows([k, *v] for k, v in zip(keys, _round(values), strict=True))

    def close(self) -> None:
        self.text.flush()
        self.text.detach()  # leave the binary stream open for its owner


def vector_sink(f: IO[bytes], path: Path | None) -> Sink:
    ext = extension(path) if path is not None else ".jsonl"
    if ext == ".npy":
        return NpyWriter(f)
    if ext in (".csv", ".tsv"):
        return CsvVectorWriter(f, "\t" if ext == ".tsv" else ",")
    return JsonlVectorWriter(f)


class LabelWriter:
    """predict's output: per row the top-k labels and probabilities, as TSV (id first with
    --id-column; no header, so `cut -f1` gives the labels) or JSON lines."""

    def __init__(self, f: IO[bytes], label_names: list[str], top_k: int, fmt: str) -> None:
        self.f, self.names, self.k, self.fmt = f, label_names, top_k, fmt

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        top = np.argsort(-values, axis=1, kind="stable")[:, : self.k]
        probs = np.take_along_axis(values, top, axis=1)
        lines = []
        for i in range(len(values)):
            pairs = [(self.names[j], float(p)) for j, p in zip(top[i], probs[i], strict=True)]
            if self.fmt == "jsonl":
                key, value = ("id", chunk.ids[i]) if chunk.ids is not None else ("text", None)
                obj: dict[str, Any] = {key: value if key == "id" else chunk.texts[i]}
                obj |= {"label": pairs[0][0], "probability": round(pairs[0][1], 6)}
                if self.k > 1:
                    obj["top"] = [{"label": n, "probability": round(p, 6)} for n, p in pairs]
                lines.append(json.dumps(obj, ensure_ascii=False))
            else:
                cells = [str(chunk.ids[i])] if chunk.ids is not None else []
                cells += [f"{n}\t{p:.4f}" for n, p in pairs]
                lines.append("\t".join(cells))
        self.f.write(("\n".join(lines) + "\n").encode("utf-8"))

    def close(self) -> None:
        self.f.flush()
