"""A persistent approximate nearest-neighbour index of a corpus (`sentcli index build`,
`sentcli search --index`): usearch's HNSW graph over f16 vectors, int8 codes or 1-bit
vectors, memory-mapped at search time, with the corpus vectors kept at f16 beside it for
rescoring and the row texts for the results.

An index folder:
  index.json      format, the model's fingerprint, width, dtype, rows; written last
  graph.usearch   the HNSW graph and its vectors (f16, i8 codes or packed bits)
  vectors.f16.npy every row's vector at f16 (rescoring; memory-mapped, not in RAM)
  ranges.json     i8, b1: the per-dimension ranges (and means, b1's thresholds) the codes
                  were made with
  texts.bin, offsets.npy, blank.npy   the row texts (blank rows are not in the graph)

It is built in a hidden folder beside the target and renamed into place whole: a build
killed at any moment leaves no folder under the index's name."""

from __future__ import annotations

import io
import json
import os
import shutil
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from torch import nn

from sentcli import checkpoint as ckpt
from sentcli import files
from sentcli.config import InferenceOptions, RunConfig
from sentcli.errors import ConfigError
from sentcli.events import IndexProgress, OnEvent
from sentcli.inference import vectors as qv
from sentcli.inference.embed import (
    BatchFn,
    InferenceResult,
    check_dims,
    resolve_model,
    run_inference,
    vector_fn,
)
from sentcli.inference.inputs import TextInput
from sentcli.inference.outputs import Sink
from sentcli.inference.search import (
    BLANK,
    OFFSETS,
    TEXTS,
    VECTORS,
    IndexWriter,
    ResultWriter,
    check_search,
)
from sentcli.model import LanguageModel, MultiTaskModel

INDEX_FORMAT, INDEX_VERSION = "sentcli-index", 2
"""2 (2026-12-07): b1 bits about the corpus means (an older sentcli would cut queries at 0
and answer wrongly, so it must refuse them); 1 still opens, its b1 bits about 0."""
OPENS = (1, 2)
META, GRAPH, F16, RANGES = "index.json", "graph.usearch", "vectors.f16.npy", "ranges.json"
INDEX_NAMES = {META, GRAPH, F16, RANGES, TEXTS, OFFSETS, BLANK}
"""What an index folder holds: --overwrite replaces a folder holding nothing else."""
DTYPES = ("f16", "i8", "b1")
METRIC = {"f16": "cos", "i8": "ip", "b1": "hamming"}
"""i8 ranks by the inner product of the query (scaled by the ranges) with the codes, which
ranks like the float inner product (vectors.int8_query); cos on the codes would not."""
BUILD_THREADS = 0
"""Threads adding rows to the graph (0: all cores; 1 builds the same graph every time)."""
EF = 128
"""Candidates the graph keeps while it searches (HNSW's ef; at least the rows asked for):
at 200,000 real rows, i8 recall@10 went 0.83 → 0.90 → 0.93 from ef 64 to 128 to 256, at
1.9× and 3.4× the time (docs/benchmarks.md)."""
ADD_ROWS = 65536
"""Rows added to the graph at a time (a progress step)."""


@dataclass
class AnnIndex:
    """An opened index: the graph (memory-mapped), the f16 vectors and the texts."""

    folder: Path
    meta: dict[str, Any]
    graph: Any
    f16: np.ndarray
    offsets: np.ndarray
    texts: np.ndarray
    ranges: qv.Ranges | None

    @property
    def dtype(self) -> str:
        return str(self.meta["dtype"])

    @property
    def dims(self) -> int:
        return int(self.meta["dims"])

    def __len__(self) -> int:
        return int(self.meta["rows"])

    def text(self, row: int) -> str:
        return bytes(self.texts[self.offsets[row] : self.offsets[row + 1]]).decode(
            "utf-8", errors="replace"
        )


def check_index_dir(out: Path, overwrite: bool, inputs: list[str]) -> None:
    """A new index goes to a new path, or replaces an index with --overwrite (under the run
    folders' rules: never `/`, home, the current folder, a folder holding other files or
    the inputs)."""
    if out.is_symlink():
        raise ConfigError(f"-o {out} is a symbolic link; give the folder itself or a new one")
    if not out.parent.is_dir():
        raise ConfigError(f"-o {out}: folder {out.parent} does not exist; create it first")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out} is a file; give a folder for the index")
    if out.is_dir() and any(out.iterdir()):
        if not (out / META).is_file():
            raise ConfigError(f"-o {out} holds files that are not a sentcli index; give another")
        if not overwrite:
            raise ConfigError(f"-o {out} holds an index; pass --overwrite to replace it")
        ckpt.check_replaceable(out, inputs, INDEX_NAMES, "a sentcli index")
    elif ckpt.precious(out):
        raise ConfigError(f"-o {out} is a folder an index would replace whole; give a new one")
    files.check_writable(out, files.existing_folder(out))


def _vectors_sink(tmp: Path, writers: list[IndexWriter]) -> Callable[[IO[bytes]], Sink]:
    def sink(f: IO[bytes]) -> Sink:
        writers.append(IndexWriter(f, tmp))
        return writers[-1]

    return sink


def _embed_corpus(
    corpus: str, tmp: Path, model: Path | None, opts: InferenceOptions, on_event: OnEvent
) -> tuple[InferenceResult, IndexWriter]:
    """The corpus's normalised vectors (f32, vectors.npy) and texts into `tmp`."""
    writers: list[IndexWriter] = []
    source = TextInput(corpus, opts.text_column)

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        assert isinstance(net, MultiTaskModel | LanguageModel)
        return vector_fn(net, normalize=True, dims=opts.dims), _vectors_sink(tmp, writers)

    result = run_inference(
        corpus, tmp / VECTORS, model, (".npy",), opts, make, on_event, source=lambda: source
    )
    return result, writers[0]


def _from_npy(path: Path, texts: str | None, tmp: Path, width: int) -> IndexWriter:
    """Vectors `embed` wrote (.npy, normalised float32) and, optionally, their texts."""
    try:
        v = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a .npy of vectors ({e}); give embed's -o x.npy") from None
    if v.ndim != 2 or v.dtype != np.float32 or not 1 <= v.shape[1] <= width:
        raise ConfigError(
            f"{path} holds {v.dtype} {v.shape}, not float32 [rows, ≤{width}] vectors of this "
            "model; embed the corpus with this model (float, not --quantize)"
        )
    sample = np.asarray(v[: min(len(v), 4096)], dtype=np.float64)
    norms = np.linalg.norm(sample, axis=1)
    if len(sample) and np.any(np.abs(norms[norms > 0] - 1) > 1e-3):
        raise ConfigError(f"{path}: its vectors are not normalised; embed without --no-normalize")
    writer = IndexWriter(io.BytesIO(), tmp)  # its texts part only: the vectors are there
    lines = TextInput(texts) if texts is not None else None
    rows = 0
    if lines is not None:
        for chunk in lines.chunks(8192):
            writer.write_texts(chunk)
        rows = len(writer.offsets) - 1
        if rows != len(v):
            raise ConfigError(
                f"--texts {texts} has {rows:,} rows, {path} {len(v):,}; give the file embed read"
            )
    else:  # rows without texts: none of them blank, each shown by its number only
        writer.offsets = array("q", bytes(8 * (len(v) + 1)))
    writer.texts.close()
    return writer


def build(
    corpus: str,
    out: Path,
    model: Path | None,
    dtype: str,
    overwrite: bool,
    opts: InferenceOptions,
    on_event: OnEvent,
    texts: str | None = None,
    ranges: Path | None = None,
    connectivity: int = 16,
) -> tuple[dict[str, Any], InferenceResult | None]:
    """Embed `corpus` (or read a .npy of its vectors) and build the index folder `out`."""
    from usearch.index import Index  # imported here: only the index commands need it

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    if ranges is not None and dtype == "f16":
        raise ConfigError("--ranges is for --dtype i8 or b1; drop it")
    if not 2 <= connectivity <= 256:
        raise ConfigError(f"--connectivity {connectivity}: give 2 to 256 links a node (default 16)")
    check_index_dir(out, overwrite, [corpus] + ([texts] if texts else []))
    path, origin = resolve_model(model)
    config = ckpt.read_config(path)
    ckpt.check_shapes(config, path)
    width = config.model.n_embd
    npy = corpus.endswith(".npy")
    if npy and opts.dims is not None:
        raise ConfigError("--dims cuts vectors while embedding; a .npy is indexed as it is")
    if not npy and texts is not None:
        raise ConfigError("--texts is for a .npy of vectors; a text corpus is its own texts")
    if opts.dims is not None:
        check_dims(config, opts.dims)
    fingerprint = qv.fingerprint(path)
    _sweep(out)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        result, source = None, tmp / VECTORS
        if npy:
            writer, source = _from_npy(Path(corpus), texts, tmp, width), Path(corpus)
        else:
            result, writer = _embed_corpus(corpus, tmp, model, opts, on_event)
        np.save(tmp / OFFSETS, np.frombuffer(writer.offsets, dtype=np.int64))
        blank = np.frombuffer(writer.blank, dtype=np.int64)
        np.save(tmp / BLANK, blank)
        v = np.load(source, mmap_mode="r")
        rows, dims = v.shape
        f16 = np.lib.format.open_memmap(tmp / F16, mode="w+", dtype=np.float16, shape=(rows, dims))
        for i in range(0, rows, ADD_ROWS):
            f16[i : i + ADD_ROWS] = v[i : i + ADD_ROWS]
        f16.flush()
        r = None
        keep = np.setdiff1d(np.arange(rows), blank)  # blank rows are never returned
        if dtype in ("i8", "b1"):  # b1: the corpus means are its bits' thresholds
            r = qv.Ranges.load(ranges) if ranges is not None else qv.Ranges.of(v, fingerprint, keep)
            r.check(fingerprint, dims, f"the ranges in {ranges}" if ranges else "the ranges")
            if dtype == "b1":
                r.check_center(ranges)
            r.save(tmp / RANGES)
        graph = Index(ndim=dims, metric=METRIC[dtype], dtype=dtype, connectivity=connectivity)
        if on_event:
            on_event(IndexProgress(0, len(keep)))
        for i in range(0, len(keep), ADD_ROWS):
            keys = keep[i : i + ADD_ROWS]
            block = np.asarray(v[keys], dtype=np.float32)
            graph.add(keys, _codes(block, dtype, r), threads=BUILD_THREADS)
            if on_event:
                on_event(IndexProgress(min(i + ADD_ROWS, len(keep)), len(keep)))
        graph.save(str(tmp / GRAPH))
        del v
        (tmp / VECTORS).unlink(missing_ok=True)  # the f16 copy is what rescoring reads
        meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "model": fingerprint}
        meta |= {"model_path": str(path.resolve()), "model_origin": origin, "dims": dims}
        meta |= {"width": width, "dtype": dtype, "metric": METRIC[dtype], "rows": rows}
        meta |= {"indexed": len(keep), "connectivity": connectivity}
        meta |= {"corpus": str(Path(corpus).resolve()), "texts": texts}
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
        _fsync_folder(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta, result


def _sweep(out: Path) -> None:
    """Remove what killed builds of `out` left beside it (their process is gone)."""
    for left in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = left.name.rpartition("-")
        if not kind.endswith((".building", ".old")) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(left, ignore_errors=True)
        except OSError:
            pass  # alive under another user: not ours to remove


def _fsync_folder(folder: Path) -> None:
    for entry in folder.iterdir():
        with open(entry, "rb") as f:
            os.fsync(f.fileno())


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished folder under its name: an earlier index is moved aside first and
    removed after, so the name holds the old index, nothing, or the new one."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _codes(v: np.ndarray, dtype: str, ranges: qv.Ranges | None, query: bool = False) -> np.ndarray:
    """Vectors as the graph compares them: corpus rows as it stores them, or (`query`) the
    queries (i8: scaled by the ranges' steps, see vectors.int8_query)."""
    if dtype == "i8":
        assert ranges is not None
        return qv.int8_query(v, ranges) if query else qv.int8(v, ranges)
    if dtype == "b1":  # signs about the calibration means (about 0 in older indexes)
        return qv.binary(v, ranges)
    return v


def _similarity(distances: np.ndarray, q: np.ndarray, index: AnnIndex) -> np.ndarray:
    """The graph's distances as approximate cosines: 1 - cos (f16), 1 - the i8 inner
    product of the scaled query (see vectors.int8_query), Hamming distance (b1)."""
    if index.dtype == "i8":
        assert index.ranges is not None
        peak = np.abs(q * index.ranges.scale()).max(axis=1, keepdims=True)
        return np.asarray((1.0 - distances) * peak / 127.0, dtype=np.float32)
    if index.dtype == "b1":
        return np.asarray(1.0 - 2.0 * distances / index.dims, dtype=np.float32)
    return np.asarray(1.0 - distances, dtype=np.float32)


def open_index(folder: Path) -> AnnIndex:
    """An index folder, checked (format, completeness, shapes), its graph memory-mapped."""
    from usearch.index import Index

    meta_path = folder / META
    if not folder.is_dir():
        raise ConfigError(f"--index {folder}: no such index; build it with sentcli index build")
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        ok = meta.get("format") == INDEX_FORMAT and meta.get("dtype") in DTYPES
    except (OSError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ConfigError(
            f"--index {folder} is not a complete sentcli index (no readable {META}); "
            "build it again with sentcli index build --overwrite"
        )
    if meta.get("version") not in OPENS:
        raise ConfigError(
            f"--index {folder}: index version {meta.get('version')} is not "
            f"{INDEX_VERSION}; build it again with this sentcli"
        )
    try:
        f16 = np.load(folder / F16, mmap_mode="r")
        offsets = np.load(folder / OFFSETS)
        size = (folder / TEXTS).stat().st_size
        texts = (
            np.memmap(folder / TEXTS, dtype=np.uint8, mode="r")
            if size
            else np.zeros(0, dtype=np.uint8)
        )
        # b1 indexes of version 1 have no ranges (their bits: signs about 0)
        has_ranges = meta["dtype"] == "i8" or (meta["dtype"] == "b1" and meta["version"] >= 2)
        ranges = qv.Ranges.load(folder / RANGES) if has_ranges else None
        graph = Index.restore(str(folder / GRAPH), view=True)
    except (OSError, ValueError, ConfigError) as e:
        raise ConfigError(f"--index {folder} is damaged ({e}); build it again") from None
    rows, dims = int(meta["rows"]), int(meta["dims"])
    if graph is None or f16.shape != (rows, dims) or offsets.shape != (rows + 1,):
        raise ConfigError(f"--index {folder} is damaged (its files disagree); build it again")
    return AnnIndex(folder, meta, graph, f16, offsets, texts, ranges)


def search(
    index: AnnIndex, queries: np.ndarray, k: int, rescore: int, ef: int = EF
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) [Q, ≤k] of each query's best rows, best first; rows < 0 pad a query
    with fewer results. With `rescore` K: the graph's top k·K candidates re-ranked by the
    cosine of the float query with their f16 vectors, the top k of those kept."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    count = k * rescore if rescore else k
    index.graph.expansion_search = max(ef, count)
    found = index.graph.search(_codes(q, index.dtype, index.ranges, query=True), count, threads=0)
    keys = np.asarray(found.keys, dtype=np.int64).reshape(len(q), -1)
    dist = np.asarray(found.distances, dtype=np.float32).reshape(len(q), -1)
    # one query gives a Matches (as many keys as found), several a BatchMatches (.counts)
    counts = np.asarray(found.counts if hasattr(found, "counts") else [len(found.keys)])
    if keys.shape[1] == 0:  # nothing in the graph (every row blank)
        return np.zeros((len(q), 0), dtype=np.float32), np.zeros((len(q), 0), dtype=np.int64)
    valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
    if rescore:
        safe = np.where(valid, keys, 0)
        cand = np.asarray(index.f16[safe.reshape(-1)], dtype=np.float32).reshape(*safe.shape, -1)
        scores = np.einsum("qcd,qd->qc", cand, q)  # exact cosines of the unit vectors
    else:
        scores = _similarity(dist, q, index)
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    order = np.lexsort((keys, -scores), axis=1)[:, :k]  # ties: the lower row first
    rows = np.take_along_axis(np.where(valid, keys, -1), order, 1)
    return np.take_along_axis(scores, order, 1), rows


def run_index_search(
    queries: str,
    folder: Path,
    output: Path | None,
    model: Path | None,
    k: int,
    rescore: int,
    threshold: float | None,
    fmt: str,
    opts: InferenceOptions,
    on_event: OnEvent,
    ef: int = EF,
) -> tuple[InferenceResult, AnnIndex]:
    """Embed the queries with the index's model and search the index."""
    formats = check_search(k, threshold, fmt)
    if ef < 1:
        raise ConfigError(f"--ef must be at least 1 (got {ef})")
    if rescore < 0:
        raise ConfigError(f"--rescore {rescore}: give 0 or more (0: no rescoring)")
    index = open_index(folder)
    path, origin = resolve_model(model)
    if qv.fingerprint(path) != index.meta["model"]:
        raise ConfigError(
            f"--index {folder} was built with another model ({index.meta.get('model_path')}) "
            f"than {origin} {path}; search with --model {index.meta.get('model_path')}"
        )
    if opts.dims is not None and opts.dims != index.dims:
        raise ConfigError(f"--dims {opts.dims}: the index holds {index.dims}-dim vectors; drop it")
    cut = index.dims if index.dims < int(index.meta["width"]) else None
    search_opts = InferenceOptions(**{**vars(opts), "dims": cut})

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        assert isinstance(net, MultiTaskModel | LanguageModel)
        fn = vector_fn(net, normalize=True, dims=cut)
        find = lambda q: search(index, q, k, rescore, ef)  # noqa: E731
        return fn, lambda f: ResultWriter(f, find, index.text, threshold, fmt)

    result = run_inference(queries, output, model, formats, search_opts, make, on_event)
    return result, index
