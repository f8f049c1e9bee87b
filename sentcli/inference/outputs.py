"""Streaming output for embed and predict: vectors as .npy (written row block by row
block), JSON lines or csv/tsv; labels as TSV or JSON lines. Row i of every output is input
row i."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from sentcli.data.sources import extension
from sentcli.errors import ConfigError
from sentcli.files import check_writable
from sentcli.inference.inputs import Chunk

VECTOR_FORMATS = (".npy", ".jsonl", ".csv", ".tsv")


NPY_HEADER = 128  # bytes reserved for the .npy header, rewritten with the final row count


def check_output(
    path: Path | None, formats: tuple[str, ...], inputs: list[str], flag: str = "-o"
) -> None:
    """Refuse, before any work, an output that cannot be written or would eat the input
    (`flag`: the option that names it)."""
    if path is None:
        return
    if extension(path) not in formats or path.suffix.lower() == ".gz":
        raise ConfigError(
            f"{flag} {path}: unknown output format; end the name with {', '.join(formats)}"
        )
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: folder {path.parent} does not exist; create it first")
    for spec in inputs:
        if spec != "-" and Path(spec).exists() and path.exists() and path.samefile(spec):
            raise ConfigError(f"{flag} {path} is the input file; write to another file")
    check_writable(path)


def check_plot(path: Path, inputs: list[str]) -> None:
    """`check_output` for a --plot image: a format matplotlib writes (png, pdf, svg…)."""
    from sentcli.metrics import image_formats

    check_output(path, tuple(f".{f}" for f in image_formats()), inputs, flag="--plot")


def escape_tsv(text: str) -> str:
    """A text as one TSV field: backslash, tab, newline and carriage return escaped."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _round(values: np.ndarray) -> list[Any]:
    if values.dtype.kind in "iu":  # quantized codes: integers as they are
        ints: list[Any] = values.tolist()
        return ints
    # 7 decimals hold a float32's precision for |x| <= 1 and keep the lines short
    rounded: list[Any] = np.round(values.astype(np.float64), 7).tolist()
    return rounded


class Sink(Protocol):
    def write(self, chunk: Chunk, values: np.ndarray) -> None: ...

    def close(self) -> None: ...


class NpyWriter:
    """float32 [N, D] .npy (int8 or uint8 for quantized vectors) written row block by row
    block; the header (with N) is rewritten at close, so the whole matrix is never in
    memory."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.rows = 0
        self.dim: int | None = None
        self.descr = "<f4"
        f.write(b"\0" * NPY_HEADER)

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        self.dim = values.shape[1]
        if values.dtype in (np.int8, np.uint8):  # quantized codes are written as they are
            self.descr = values.dtype.str
        self.f.write(np.ascontiguousarray(values, dtype=self.descr).tobytes())
        self.rows += len(values)

    def close(self) -> None:
        shape = (self.rows, self.dim or 0)
        header = {"descr": self.descr, "fortran_order": False, "shape": shape}
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
        self.f.flush()  # each chunk reaches a pipe's reader as soon as it is done

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
        self.text.flush()

    def close(self) -> None:
        self.text.flush()
        self.text.detach()  # leave the binary stream open for its owner


class MapSink:
    """Another sink, fed `fn(values)` (quantized codes)."""

    def __init__(self, sink: Sink, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.sink, self.fn = sink, fn

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        self.sink.write(chunk, self.fn(values))

    def close(self) -> None:
        self.sink.close()


class RangeSink:
    """Nothing written: each dimension's lowest and highest value, and its sum, over every
    row."""

    def __init__(self) -> None:
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.rows = 0

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        self.add(values)

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        low, high = values.min(axis=0), values.max(axis=0)
        self.low = low if self.low is None else np.minimum(self.low, low)
        self.high = high if self.high is None else np.maximum(self.high, high)
        total = values.sum(axis=0, dtype=np.float64)  # float64: millions of rows
        self.total = total if self.total is None else self.total + total
        self.rows += len(values)

    def close(self) -> None:
        pass


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
                cells = [escape_tsv(str(chunk.ids[i]))] if chunk.ids is not None else []
                cells += [f"{n}\t{p:.4f}" for n, p in pairs]
                lines.append("\t".join(cells))
        self.f.write(("\n".join(lines) + "\n").encode("utf-8"))
        self.f.flush()

    def close(self) -> None:
        self.f.flush()


class CosineWriter:
    """similarity's output: the cosine of each pair (rows 2i and 2i + 1, L2-normalised), one
    per line."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        cos = (values[0::2] * values[1::2]).sum(axis=1)
        self.f.write("".join(f"{c:.6f}\n" for c in cos).encode("utf-8"))
        self.f.flush()

    def close(self) -> None:
        self.f.flush()
