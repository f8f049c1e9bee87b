"""Streaming input for embed and predict: texts in chunks from a line file, stdin or a
csv/tsv/jsonl/parquet column, checked before any work. Memory is bounded by the chunk size
whatever the input's size."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import sys
import threading
import time
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sentcli import dist
from sentcli.data.pairs import PAIR_NAMES
from sentcli.data.sources import (
    TEXT_NAMES,
    check_file,
    extension,
    lone_surrogate,
    open_binary,
    pick_column,
)
from sentcli.errors import ConfigError, DataError

FIRST_CHUNK = 64
STDIN_WAIT = 0.05
"""Seconds without a new line on stdin after which the rows read so far go through."""
STDIN_MAX_WAIT = 0.5
"""The longest a row read from stdin waits for its chunk to fill (a steady stream never
pauses for STDIN_WAIT)."""
PAUSE = object()
"""What _paced yields when stdin has been quiet for STDIN_WAIT seconds."""
TABLES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


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
        if lineno == 1 and raw.startswith(b"\x93NUMPY"):  # vectors where texts belong
            raise DataError(
                f"{where} is a NumPy .npy file (vectors); give the texts, one per line or "
                "in a table"
            ) from None
        raise DataError(
            f"{where}: line {lineno} is not UTF-8 (byte {raw[e.start]:#04x}); re-encode the "
            "input as UTF-8 (for example with iconv -f latin1 -t utf-8)"
        ) from None


def input_kind(spec: str) -> str:
    """How an input is read: "lines" (stdin, a text file) or a table kind, by its name."""
    return "lines" if spec == "-" else TABLES.get(extension(Path(spec)), "lines")


class TextInput:
    """One input: `-` (stdin) or a file. The constructor checks what it can before any work
    (existence, emptiness, UTF-8 and row count of line files, columns of tables)."""

    def __init__(
        self,
        spec: str,
        text_column: str | None = None,
        id_column: str | None = None,
        stdin: IO[bytes] | None = None,
        flags: tuple[str, str] = ("--text-column", "--id-column"),
    ) -> None:
        """`flags`: the options that set the text and id columns, for the messages."""
        if spec == "-" and dist.from_env().on:
            raise ConfigError(
                "under torchrun every process reads the input itself: give a file, not - (stdin)"
            )
        self.name = "stdin" if spec == "-" else spec
        self.stop = threading.Event()
        """Set by the consumer when it stops early: stdin's reader then gives up."""
        self.text_column = text_column
        self.id_column = id_column
        self.flags = flags
        self.total: int | None = None  # rows, when known before reading
        self._stdin = stdin
        self.path = Path(spec)
        self.kind = input_kind(spec)
        if self.kind == "lines" and (text_column or id_column):
            raise ConfigError(
                f"{self.name} is read as one text per line; {' and '.join(dict.fromkeys(flags))} "
                f"appl{'ies' if flags[0] == flags[1] else 'y'} to .csv, .tsv, .jsonl and .parquet "
                "input"
            )
        if spec != "-":
            check_file(
                self.path,
                missing="no such file; check the path",
                not_a_file="give a text file, - for stdin, or a table",
                empty="give at least one line",
                scan_gz=False,  # line files are scanned below; tables are read as they stream
            )
        if self.kind == "lines" and spec != "-":
            self.total = self._scan_lines()
        elif self.kind != "lines":
            self._check_columns()

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
        text_flag, id_flag = self.flags
        self.text_column = pick_column(
            columns, self.text_column, TEXT_NAMES, "text", self.name, say_what=False, flag=text_flag
        )
        if self.id_column is not None:
            pick_column(columns, self.id_column, (), "id", self.name, say_what=False, flag=id_flag)

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

    def chunks(self, size: int, cut_on_pause: bool = True) -> Iterator[Chunk]:
        """The rows in order, `size` at a time. From stdin the first chunk is FIRST_CHUNK
        rows and each next one twice as many up to `size`, so the first answers come out at
        once; with `cut_on_pause` a chunk is also cut when no line has come for STDIN_WAIT
        seconds: `tail -f log | sentcli predict -` answers each line as it arrives. A file
        is read in whole chunks: small first chunks sort fewer texts together (more
        padding, half-full batches) and cost a 1,000-line file 64 % more time."""
        texts: list[str] = []
        ids: list[Any] = []
        stdin = self.kind == "lines" and (self._stdin is not None or self.name == "stdin")
        n, limit, first = 0, min(size, FIRST_CHUNK) if stdin else size, 0.0
        paced = stdin and cut_on_pause
        rows = _paced(self._rows(), self.stop) if paced else self._rows()
        for item in rows:
            if item is not PAUSE:
                text, row_id = item
                n += 1
                first = first if texts else time.monotonic()
                texts.append(text)
                ids.append(row_id)
            late = paced and texts and time.monotonic() - first > STDIN_MAX_WAIT
            if texts and (item is PAUSE or late or len(texts) == limit):
                yield Chunk(texts, ids if self.id_column else None)
                texts, ids, limit = [], [], min(size, 2 * limit)
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
            # the process's stdin is read from its file descriptor, not through
            # sys.stdin.buffer: a reader thread blocked inside the buffer would hold its lock
            # and abort the interpreter's exit (`tail -f log | sentcli predict - | head`)
            stream = self._stdin if self._stdin is not None else _stdin_lines()
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
                ident = obj[self.id_column] if self.id_column else None
                lone_surrogate(line, text + (ident if isinstance(ident, str) else ""), self.name, n)
                yield text, ident

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


def _stdin_lines() -> Iterator[bytes]:
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):  # a stdin replaced in-process (io.UnsupportedOperation)
        return iter(sys.stdin.buffer)
    return _fd_lines(fd)


def _fd_lines(fd: int) -> Iterator[bytes]:
    """The lines of a file descriptor (each ending with its newline, the last maybe not)."""
    pending = b""
    while block := os.read(fd, 1 << 16):
        *lines, pending = (pending + block).split(b"\n")
        yield from (line + b"\n" for line in lines)
    if pending:
        yield pending


def _paced(rows: Iterator[tuple[str, Any]], stop: threading.Event) -> Iterator[Any]:
    """`rows`, read ahead by a daemon thread, with PAUSE whenever the next row is late (once
    per pause). The reader's exceptions (non-UTF-8 input) are raised here, in order. When
    `stop` is set the generator ends (the reader may stay blocked on its read: a daemon)."""
    items: queue.Queue[Any] = queue.Queue(maxsize=1 << 16)
    end = object()

    def read() -> None:
        try:
            for row in rows:
                items.put(row)
        except BaseException as e:  # handed to the consumer
            items.put(e)
        items.put(end)

    threading.Thread(target=read, name="sentcli-stdin", daemon=True).start()
    paused = False
    while not stop.is_set():
        try:
            item = items.get(timeout=0.1 if paused else STDIN_WAIT)
        except queue.Empty:
            if not paused:
                paused = True
                yield PAUSE
            continue
        paused = False
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _header(path: Path, kind: str) -> list[str]:
    """A table's column names (its first row or object; the schema of a parquet file)."""
    try:
        return _read_header(path, kind)
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: bytes that are not UTF-8 in its first row; re-encode the file as UTF-8 "
            "(for example with iconv -f latin1 -t utf-8)"
        ) from None
    except (OSError, EOFError, zlib.error, ValueError) as e:  # pyarrow's errors are ValueErrors
        raise DataError(f"{path}: cannot be read as a table ({e}); fix the file") from e


def _read_header(path: Path, kind: str) -> list[str]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    with open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        if kind == "csv":
            delimiter = "\t" if extension(path) == ".tsv" else ","
            return next(csv.reader(text, delimiter=delimiter), [])
        line = next((x for x in text if x.strip()), "{}")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return []
        return list(obj) if isinstance(obj, dict) else []


class PairInput:
    """Text pairs for `similarity`: two files read line by line together, one table with two
    text columns, or one line file (or stdin) of `text1<TAB>text2` lines. `chunks` yields
    the pairs interleaved (a1, b1, a2, b2, …) so one batch embeds both sides."""

    def __init__(
        self,
        first: str,
        second: str | None = None,
        pair_columns: list[str] | None = None,
        stdin: IO[bytes] | None = None,
    ) -> None:
        if second is not None:
            self.mode = "two"
            for spec in (first, second):
                if input_kind(spec) != "lines":
                    raise ConfigError(
                        f"{spec}: with A and B, each is a line file (one text per line); a table "
                        "holds its pairs itself: give it alone (its columns: --pair-columns A,B)"
                    )
            if pair_columns:
                raise ConfigError(
                    "--pair-columns names a table's two text columns; A and B are line files "
                    "paired line by line: drop --pair-columns"
                )
            self.first, self.second = TextInput(first, stdin=stdin), TextInput(second, stdin=stdin)
            rows, b = self.first.total, self.second.total
            if rows is not None and b is not None and rows != b:
                raise DataError(
                    f"{self.first.name} has {rows:,} lines and {self.second.name} {b:,}: give "
                    "two files of the same length (line i of one pairs with line i of the other)"
                )
        elif input_kind(first) == "lines":
            self.mode = "tab"
            self.lines = TextInput(first, stdin=stdin)
            rows = self.lines.total
        else:
            self.mode = "table"
            self.table = self._table(first, pair_columns, stdin)
            rows = self.table.total
        self.total = None if rows is None else 2 * rows  # texts: both sides of every pair
        self.stop = threading.Event()
        for part in ("first", "second", "lines", "table"):  # they stop when the pairs stop
            if hasattr(self, part):
                getattr(self, part).stop = self.stop

    @staticmethod
    def _table(first: str, pair_columns: list[str] | None, stdin: IO[bytes] | None) -> TextInput:
        """A table's two text columns (given, or found by name) as one TextInput: the second
        text rides in the id column, so TextInput checks and streams both."""
        path = Path(first)
        check_file(path, "no such file; check the path", "give a table or a text file")
        columns = _header(path, TABLES[extension(path)])
        pair = pair_columns or next(
            (list(g[:2]) for g in PAIR_NAMES if all(c in columns for c in g[:2])), []
        )
        if len(pair) != 2:
            raise DataError(
                f"{first}: no pair of text columns found (looked for sentence1/sentence2, "
                f"anchor/positive, …); columns are {', '.join(columns)}; pass --pair-columns A,B"
            )
        flags = ("--pair-columns", "--pair-columns")
        return TextInput(first, text_column=pair[0], id_column=pair[1], stdin=stdin, flags=flags)

    def chunks(self, size: int) -> Iterator[Chunk]:
        if self.mode == "two":
            yield from self._two(size)
        elif self.mode == "table":
            for chunk in self.table.chunks(size):
                assert chunk.ids is not None
                for b in chunk.ids:
                    if not isinstance(b, str):
                        raise DataError(
                            f"{self.table.name}: a row has {type(b).__name__} in column "
                            f"{self.table.id_column!r}, not text; pass --pair-columns A,B"
                        )
                yield _interleave(chunk.texts, [str(b) for b in chunk.ids])
        else:
            row = 0
            for chunk in self.lines.chunks(size):
                a, b = [], []
                for text in chunk.texts:
                    row += 1
                    left, tab, right = text.partition("\t")
                    if not tab or "\t" in right:
                        many = "no tab" if not tab else f"{text.count(chr(9))} tabs"
                        raise DataError(
                            f"{self.lines.name}: line {row} has {many}; give one pair per line "
                            "as text1<TAB>text2, or two files"
                        )
                    a.append(left)
                    b.append(right)
                yield _interleave(a, b)

    def _two(self, size: int) -> Iterator[Chunk]:
        # the same chunk sizes on both sides: never cut early on a pause of stdin
        firsts, seconds = self.first.chunks(size, False), self.second.chunks(size, False)
        for x, y in zip(firsts, seconds, strict=False):
            if len(x.texts) != len(y.texts):
                raise DataError(f"{self.first.name} and {self.second.name} differ in length")
            yield _interleave(x.texts, y.texts)
        if next(firsts, None) is not None or next(seconds, None) is not None:
            raise DataError(f"{self.first.name} and {self.second.name} differ in length")


def _interleave(a: list[str], b: list[str]) -> Chunk:
    return Chunk([t for pair in zip(a, b, strict=True) for t in pair], None)
