"""Semantic search: each query's top-k corpus rows by cosine, exact, by chunked matrix
products over the corpus vectors read from disk block by block (memory stays flat as the
corpus grows).

The corpus's vectors and texts are computed once into a cache folder named by a hash of the
corpus file's bytes, its text column, the model's weights, config and tokenizer, and the
inference settings: a changed corpus or model gets a new folder, so stale vectors are never
read. A cache folder that does not hold what sentcli wrote (a file missing, unreadable, or of
the wrong shape for its rows and the model's width) is embedded again, and said so."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from torch import nn

from sentcli import checkpoint as ckpt
from sentcli import dist, files
from sentcli.config import InferenceOptions, RunConfig
from sentcli.device import resolve_device
from sentcli.errors import CheckpointError, ConfigError
from sentcli.events import OnEvent
from sentcli.inference.embed import (
    BatchFn,
    InferenceResult,
    check_dims,
    resolve_model,
    run_inference,
    vector_fn,
)
from sentcli.inference.inputs import Chunk, TextInput, input_kind
from sentcli.inference.outputs import NpyWriter, Sink, check_output, escape_tsv
from sentcli.model import LanguageModel, MultiTaskModel

VECTORS, TEXTS, OFFSETS, META = "vectors.npy", "texts.bin", "offsets.npy", "meta.json"
BLANK = "blank.npy"
"""The rows whose text is empty or whitespace: kept (the rows stay numbered as the corpus's
lines), never returned (their vector, of no words, is close to many queries)."""
FORMAT = 2
"""The cache folder's layout (2: with blank.npy); part of its name, so that an older
layout is never read as a damaged one."""
SPLIT_SAMPLE = 4096
"""Rows whose first byte open_index checks for a UTF-8 character cut in two."""
SCORE_BLOCK = 1 << 22
"""Scores computed at a time (queries × corpus rows; 16 MiB of float32 and 32 MiB of
int64 positions for the partial sort)."""


@dataclass
class CorpusIndex:
    """A corpus's L2-normalised vectors [N, D] and its texts, memory-mapped from the cache."""

    folder: Path
    vectors: np.ndarray
    offsets: np.ndarray
    texts: np.ndarray
    built: InferenceResult | None
    """The embedding of the corpus by this command; None when it came from the cache."""
    blank: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The blank rows (never returned)."""
    damaged: str | None = None
    """Why the cache folder found for this corpus could not be used (it was rebuilt)."""

    def text(self, row: int) -> str:
        raw = bytes(self.texts[self.offsets[row] : self.offsets[row + 1]])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:  # open_index checks a sample of the offsets, not all
            raise ConfigError(
                f"the corpus cache {self.folder} is damaged (row {row} is not UTF-8); "
                "delete it, and search again"
            ) from None

    def __len__(self) -> int:
        return len(self.vectors)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Vectors [start, stop). From the cache they are read, not mapped: mapped pages
        would count in the process's memory, which then grew with the corpus."""
        if not isinstance(self.vectors, np.memmap):
            return np.asarray(self.vectors[start:stop])
        stop = min(stop, len(self.vectors))
        dim = self.vectors.shape[1]
        with open(self.vectors.filename, "rb") as f:  # type: ignore[arg-type]
            f.seek(self.vectors.offset + start * dim * self.vectors.itemsize)
            values = np.fromfile(f, dtype=self.vectors.dtype, count=(stop - start) * dim)
        return values.reshape(stop - start, dim)


def corpus_key(
    corpus: Path, column: str | None, model: Path, max_length: int | None, opts: InferenceOptions
) -> str:
    """The cache folder's name: what the corpus vectors depend on, hashed."""
    h = hashlib.sha256()
    files.hash_file(h, corpus)
    files.hash_file(h, model / ckpt.WEIGHTS)
    h.update((model / ckpt.CONFIG).read_bytes())
    files.hash_file(h, model / ckpt.TOKENIZER)  # the same weights under another tokenizer differ
    device = resolve_device(opts.device).type
    settings = [column, max_length, str(opts.precision), device, FORMAT, opts.dims]
    h.update(json.dumps(settings).encode())
    return h.hexdigest()[:32]


class IndexWriter:
    """The corpus's vectors as .npy (row block by row block) and its texts as UTF-8 bytes
    with their offsets, so a result's text is read back without keeping the corpus."""

    def __init__(self, f: IO[bytes], folder: Path) -> None:
        self.vectors = NpyWriter(f)
        self.texts = open(folder / TEXTS, "wb")  # noqa: SIM115 (closed in close())
        self.offsets = array("q", [0])
        self.blank = array("q")

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        self.vectors.write(chunk, values)
        self.write_texts(chunk)

    def write_texts(self, chunk: Chunk) -> None:
        for text in chunk.texts:
            if not text.strip():
                self.blank.append(len(self.offsets) - 1)
            data = text.encode("utf-8")
            self.texts.write(data)
            self.offsets.append(self.offsets[-1] + len(data))

    def close(self) -> None:
        self.vectors.close()
        self.texts.close()


def corpus_index(
    corpus: str,
    column: str | None,
    model: Path | None,
    opts: InferenceOptions,
    cache: Path,
    on_event: OnEvent,
) -> CorpusIndex:
    """The corpus's index from the cache, embedding the corpus first when it is not there."""
    if corpus == "-":
        raise ConfigError("--corpus - : the corpus must be a file (stdin holds the queries)")
    # checks the file and its column before any work
    source = TextInput(corpus, column, flags=("--corpus-column", "--corpus-column"))
    path, origin = resolve_model(model)
    try:
        config = ckpt.read_config(path)  # a folder that is not a run fails here
        ckpt.check_shapes(config, path)  # and one whose config.json lies, before any work
        width = config.model.n_embd
    except CheckpointError as e:
        raise CheckpointError(f"{origin}: {e}" if origin != "--model" else str(e)) from e
    if opts.dims is not None:
        check_dims(config, opts.dims)  # out of range: refused before any work
        width = opts.dims
    read = _stamp(Path(corpus))  # the corpus as hashed: it must not change until published
    key = corpus_key(Path(corpus), source.text_column, path, opts.max_length, opts)
    folder = cache / "search" / key
    damaged = None
    if folder.exists() or folder.is_symlink():
        try:
            return open_index(folder, width)
        except DamagedIndex as e:
            damaged = str(e)
            _remove(folder)
            if folder.exists() or folder.is_symlink():
                raise ConfigError(
                    f"the corpus cache {folder} {damaged} and cannot be removed; delete it"
                ) from None
    tmp = folder.with_name(f"{key}.tmp{socket.gethostname()}-{os.getpid()}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _sweep(folder.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise ConfigError(
            f"cannot write the corpus cache in {cache} ({e.strerror}); give --cache DIR "
            f"or set ${files.CACHE_ENV}"
        ) from None
    writers: list[IndexWriter] = []

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        assert isinstance(net, MultiTaskModel | LanguageModel)

        def sink(f: IO[bytes]) -> Sink:
            writers.append(IndexWriter(f, tmp))
            return writers[-1]

        return vector_fn(net, normalize=True, dims=opts.dims), sink

    try:
        index_opts = InferenceOptions(**{**vars(opts), "text_column": source.text_column})
        built = run_inference(
            corpus, tmp / VECTORS, model, (".npy",), index_opts, make, on_event,
            source=lambda: source,
        )  # fmt: skip
        # its vectors are not those of the hashed bytes: nothing is cached (every rank
        # learns it, so that none waits for an index that will not come)
        changed = bool(writers) and _moved(Path(corpus), read)
        if dist.agree_max([int(changed)], dist.from_env())[0]:
            raise ConfigError(
                f"{corpus} changed while it was embedded; nothing was cached: run the "
                "search again once the file stays as it is"
            )
        if writers:  # no sink on the other torchrun ranks: the main one writes the index
            _publish(tmp, folder, writers[0], corpus, source.text_column, path)
            built.output = folder
        else:
            shutil.rmtree(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not files.disk_full(e, cache):
            raise
        raise ConfigError(
            f"the corpus cache in {cache} is on a full disk; free some space there, or give "
            f"--cache DIR (or ${files.CACHE_ENV}) on another disk"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dist.barrier(dist.from_env())  # under torchrun every rank then reads that index
    try:
        index = open_index(folder, width)
    except DamagedIndex as e:  # only if something damaged it between the rename and now
        raise ConfigError(f"the corpus cache {folder} {e}; delete it and run again") from None
    index.built, index.damaged = built, damaged
    return index


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten: its inode, size and modification time."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _moved(path: Path, read: tuple[int, int, int]) -> bool:
    """Whether the file at `path` is no longer the one stamped `read` (gone counts)."""
    try:
        return _stamp(path) != read
    except OSError:
        return True


def _remove(entry: Path) -> None:
    """A damaged cache entry, whatever it is (a folder, a file, a link)."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


def _sweep(search: Path) -> None:
    """Remove the half-built indexes (KEY.tmpHOST-PID) of searches on this machine that
    were killed: their process is gone (another machine's, on a shared cache, are left)."""
    mine = f".tmp{socket.gethostname()}-"
    for entry in search.glob(f"*{mine}*"):
        pid = entry.name.rpartition(mine)[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _remove(entry)
        except OSError:
            pass  # alive, under another user


class DamagedIndex(Exception):
    """A cache folder that does not hold what `_publish` wrote."""


def open_index(folder: Path, width: int) -> CorpusIndex:
    """The index in `folder`, checked against its meta.json and the model's `width` (shapes
    and sizes, not every value: that would read the whole corpus). A missing or unreadable
    file is damage; other OS errors (permissions, I/O) are raised as they are."""

    def load(name: str, read: Callable[[Path], Any]) -> Any:
        try:
            return read(folder / name)
        except FileNotFoundError:
            raise DamagedIndex(f"has no {name}") from None
        except (ValueError, KeyError, TypeError, EOFError, UnicodeDecodeError) as e:
            raise DamagedIndex(f"has an unreadable {name} ({type(e).__name__})") from None

    if not folder.is_dir() or folder.is_symlink():
        raise DamagedIndex("is not a folder")
    rows = load(META, lambda p: json.loads(p.read_text("utf-8"))["rows"])
    vectors = load(VECTORS, lambda p: np.load(p, mmap_mode="r"))
    offsets = load(OFFSETS, np.load)
    blank = load(BLANK, np.load)
    size = load(TEXTS, lambda p: p.stat().st_size)
    if not isinstance(rows, int) or vectors.shape != (rows, width):
        raise DamagedIndex(f"holds vectors of shape {vectors.shape}, not ({rows}, {width})")
    if vectors.dtype != np.float32:
        raise DamagedIndex(f"holds {vectors.dtype} vectors, not float32")
    if offsets.shape != (rows + 1,) or offsets.dtype != np.int64:
        raise DamagedIndex(f"holds {offsets.shape} text offsets for {rows} rows")
    if offsets[0] != 0 or offsets[-1] != size or np.any(np.diff(offsets) < 0):
        raise DamagedIndex(f"holds text offsets that do not match its {TEXTS}")
    if blank.ndim != 1 or blank.dtype != np.int64 or np.any((blank < 0) | (blank >= rows)):
        raise DamagedIndex(f"holds a {BLANK} that does not match its rows")
    texts = (
        np.memmap(folder / TEXTS, dtype=np.uint8, mode="r")
        if size > 0
        else np.zeros(0, dtype=np.uint8)  # a corpus of empty lines: nothing to map
    )
    # a row's first byte, for a sample of rows spread over the file (one read each: all of
    # them would read the whole corpus at every search)
    sample = offsets[:-1][np.unique(np.linspace(0, rows - 1, min(rows, SPLIT_SAMPLE), dtype=int))]
    starts = sample[sample < size]
    if len(starts) and np.any((texts[starts] & 0xC0) == 0x80):  # a UTF-8 continuation byte
        raise DamagedIndex(f"holds text offsets that split a UTF-8 character of its {TEXTS}")
    return CorpusIndex(folder, vectors, offsets, texts, None, blank)


def _publish(
    tmp: Path, folder: Path, writer: IndexWriter, corpus: str, column: str | None, model: Path
) -> None:
    """The finished index in `tmp` (vectors and texts written) gets its offsets and meta,
    then replaces `folder` in one rename."""
    np.save(tmp / OFFSETS, np.frombuffer(writer.offsets, dtype=np.int64))
    np.save(tmp / BLANK, np.frombuffer(writer.blank, dtype=np.int64))
    meta: dict[str, Any] = {"corpus": str(Path(corpus).resolve()), "column": column}
    meta |= {"model": str(model.resolve()), "rows": len(writer.offsets) - 1}
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
    try:
        os.replace(tmp, folder)  # whole or not at all
    except OSError:
        if not (folder / META).is_file():
            raise
        shutil.rmtree(tmp)  # another search built the same index meanwhile


def top_k(index: CorpusIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) [Q, min(k, N - blank rows)] of each query's best corpus rows,
    best first (ties: the lower row first), exact. Memory is bounded whatever Q, k and N:
    the queries go in groups and the corpus in blocks, so that a group's scores, its
    candidates and a block of vectors each stay within about SCORE_BLOCK floats."""
    n, q = len(index), len(queries)
    k = min(k, n - len(index.blank))  # blank rows are never returned
    group = max(1, min(q, SCORE_BLOCK // (k + 1024)))
    block = max(256, min(SCORE_BLOCK // group, SCORE_BLOCK // max(queries.shape[1], 1)))
    if q == 0 or k <= 0:
        k = max(k, 0)
        return np.empty((q, k), dtype=np.float32), np.empty((q, k), dtype=np.int64)
    parts = [_top_k(index, queries[i : i + group], k, block) for i in range(0, q, group)]
    return np.concatenate([s for s, _ in parts]), np.concatenate([r for _, r in parts])


def _top_k(
    index: CorpusIndex, queries: np.ndarray, k: int, block: int
) -> tuple[np.ndarray, np.ndarray]:
    q = len(queries)
    best_s = np.empty((q, 0), dtype=np.float32)
    best_i = np.empty((q, 0), dtype=np.int64)
    for start in range(0, len(index), block):
        scores = queries @ index.rows(start, start + block).T  # [Q, C]
        blank = index.blank[(index.blank >= start) & (index.blank < start + block)]
        scores[:, blank - start] = -np.inf  # below every real cosine: never among the best k
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        if cand_s.shape[1] > k:
            keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            cand_s = np.take_along_axis(cand_s, keep, 1)
            cand_i = np.take_along_axis(cand_i, keep, 1)
        best_s, best_i = cand_s, cand_i
    order = np.lexsort((best_i, -best_s), axis=1)
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def check_search(k: int, threshold: float | None, fmt: str) -> tuple[str, ...]:
    """The output options of either search (exact or an index), checked before any work;
    returns the output file names the format allows."""
    if k < 1:
        raise ConfigError(f"-k must be at least 1 (got {k})")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: a cosine threshold is between -1 and 1")
    if fmt not in ("tsv", "jsonl"):
        raise ConfigError(f"--format {fmt}: use tsv or jsonl")
    return (".tsv", ".txt") if fmt == "tsv" else (".jsonl",)


class ResultWriter:
    """search's output: per query its results, best first, as TSV (query, rank, score, row,
    text; no header) or JSON lines. Query and corpus rows are numbered from 1. `find` gives
    a batch of query vectors their (scores, rows), best first; a row < 0 ends a query's
    list (fewer results than k)."""

    def __init__(
        self, f: IO[bytes], find: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        text: Callable[[int], str], threshold: float | None, fmt: str,
    ) -> None:  # fmt: skip
        self.f, self.find, self.text, self.threshold, self.fmt = f, find, text, threshold, fmt
        self.queries = 0

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        scores, rows = self.find(values)
        lines = []
        for qi in range(len(values)):
            query = self.queries + qi + 1
            for rank, (score, row) in enumerate(zip(scores[qi], rows[qi], strict=True), 1):
                if row < 0 or (self.threshold is not None and score < self.threshold):
                    break  # results are sorted: the rest are lower
                text = self.text(int(row))
                if self.fmt == "jsonl":
                    obj: dict[str, Any] = {"query": query, "rank": rank}
                    obj["score"] = round(float(score), 6)
                    obj |= {"row": int(row) + 1, "text": text}
                    lines.append(json.dumps(obj, ensure_ascii=False))
                else:
                    lines.append(f"{query}\t{rank}\t{score:.4f}\t{row + 1}\t{escape_tsv(text)}")
        self.queries += len(values)
        if lines:
            self.f.write(("\n".join(lines) + "\n").encode("utf-8"))
            self.f.flush()

    def close(self) -> None:
        self.f.flush()


def run_search(
    queries: str,
    corpus: str,
    output: Path | None,
    model: Path | None,
    k: int,
    threshold: float | None,
    fmt: str,
    corpus_column: str | None,
    opts: InferenceOptions,
    cache: Path,
    on_event: OnEvent,
) -> tuple[InferenceResult, CorpusIndex]:
    """Index the corpus (or find it in the cache), then stream the queries through it."""
    formats = check_search(k, threshold, fmt)
    check_output(output, formats, [queries, corpus])
    if corpus_column is None and input_kind(corpus) != "lines":
        corpus_column = opts.text_column  # a table corpus: the queries' column by default
    # opened (and checked) before the corpus is embedded, then streamed as it is
    texts = TextInput(queries, opts.text_column, opts.id_column, opts.stdin)
    index = corpus_index(corpus, corpus_column, model, opts, cache, on_event)

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        assert isinstance(net, MultiTaskModel | LanguageModel)
        fn = vector_fn(net, normalize=True, dims=opts.dims)
        find = lambda q: top_k(index, q, k)  # noqa: E731
        return fn, lambda f: ResultWriter(f, find, index.text, threshold, fmt)

    result = run_inference(
        queries, output, model, formats, opts, make, on_event, source=lambda: texts
    )
    return result, index
