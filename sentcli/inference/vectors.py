"""Quantized sentence vectors: int8 with per-dimension ranges taken from a calibration set
(never from the batch being quantized, so a text's codes do not depend on its neighbours),
and 1-bit vectors packed 8 to a byte.

int8 is symmetric per dimension: code = round(x / a), a = max(|low|, |high|) / 127, clipped
to ±127; `dequantize` gives code · a back. Zero stays zero, so a query scaled by the same
`a` (`int8_query`) ranks corpus codes by their inner product with the float query, up to
rounding: what the index's i8 search computes. Binary keeps the sign of each dimension
about a threshold: 0, or with ranges each dimension's calibration mean (`center`). A model's
dimensions need not be centred on 0, and plain signs then waste bits on dimensions nearly
always one sign (the figures: docs/model.md, "Matryoshka dimensions and binary vectors").

The ranges file is JSON (`RANGES_FORMAT`): the model's fingerprint, the width, the rows it
was computed from, each dimension's low and high and (since 2026-12-07; older files have
none, and binary codes from them take signs about 0) its mean, `center`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentcli import checkpoint as ckpt
from sentcli import files
from sentcli.errors import ConfigError
from sentcli.inference.outputs import RangeSink

RANGES_FORMAT = "sentcli-int8-ranges"
RANGES_VERSION = 1
BLOCK = 65536
"""Rows read at a time when ranges are taken from a matrix of vectors."""


def fingerprint(model: Path) -> str:
    """A run's identity for vectors: its weights, config and tokenizer, hashed (the same
    weights under another tokenizer give other vectors)."""
    h = hashlib.sha256()
    for name in (ckpt.WEIGHTS, ckpt.CONFIG, ckpt.TOKENIZER):
        files.hash_file(h, model / name)
    return h.hexdigest()[:32]


@dataclass
class Ranges:
    """Per-dimension calibration ranges of a model's (first `dims`) vectors."""

    model: str
    """The fingerprint of the model the vectors came from."""
    dims: int
    rows: int
    """Calibration vectors they were computed from."""
    low: list[float]
    high: list[float]
    center: list[float] | None = None
    """Each dimension's mean over the calibration vectors (binary codes' thresholds)."""

    @classmethod
    def of(cls, vectors: np.ndarray, model: str, rows: np.ndarray | None = None) -> Ranges:
        """The ranges of `vectors` (of its `rows`, sorted, when given), read BLOCK rows at a
        time (a memory-mapped corpus of millions of rows is never loaded whole)."""
        sink = RangeSink()
        for i in range(0, len(vectors) if rows is None else len(rows), BLOCK):
            block = vectors[i : i + BLOCK] if rows is None else vectors[rows[i : i + BLOCK]]
            sink.add(np.asarray(block, dtype=np.float32))
        return cls.from_sink(sink, model)

    @classmethod
    def from_sink(cls, sink: RangeSink, model: str) -> Ranges:
        if sink.low is None or sink.high is None or sink.total is None:
            raise ConfigError("calibration needs at least one text; give a non-empty corpus")
        center = (sink.total / sink.rows).astype(np.float32).tolist()
        return cls(model, len(sink.low), sink.rows, sink.low.tolist(), sink.high.tolist(), center)

    def scale(self) -> np.ndarray:
        """Each dimension's step a (float32 [D]): the larger of |low| and |high| over 127."""
        bound = np.maximum(np.abs(np.asarray(self.low)), np.abs(np.asarray(self.high)))
        return np.asarray(np.maximum(bound, 1e-12) / 127.0, dtype=np.float32)

    def to_json(self) -> str:
        head = {"format": RANGES_FORMAT, "version": RANGES_VERSION}
        return json.dumps(head | asdict(self))

    def save(self, path: Path) -> None:
        text = self.to_json()
        files.atomic_write(path, lambda tmp: _write(tmp, text))

    @classmethod
    def load(cls, path: Path) -> Ranges:
        """A ranges file, checked (format, version, one low and high per dimension)."""
        try:
            d: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no such ranges file; make one with sentcli calibrate"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ConfigError(
                f"{path} is not a ranges file; make one with sentcli calibrate"
            ) from None
        if not isinstance(d, dict) or d.get("format") != RANGES_FORMAT:
            raise ConfigError(f"{path} is not a ranges file; make one with sentcli calibrate")
        if d.get("version") != RANGES_VERSION:
            raise ConfigError(
                f"{path}: ranges format version {d.get('version')} is not {RANGES_VERSION}; "
                "calibrate again with this sentcli"
            )
        try:
            center = d.get("center")
            r = cls(str(d["model"]), int(d["dims"]), int(d["rows"]), d["low"], d["high"], center)
            ok = len(r.low) == len(r.high) == r.dims > 0
            ok = ok and (center is None or len(center) == r.dims)
            given = r.low + r.high + (center or [])
            ok = ok and all(np.isfinite(np.asarray(given, dtype=np.float64)))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"{path} is damaged (its ranges do not match its width); calibrate again"
            )
        return r

    def check(self, model: str, dims: int, what: str) -> None:
        """Refuse ranges of another model or width (their codes would mean nothing)."""
        if self.model != model:
            raise ConfigError(
                f"{what} were calibrated on another model's vectors; calibrate with this "
                "model (sentcli calibrate CORPUS --model RUN)"
            )
        if self.dims != dims:
            raise ConfigError(
                f"{what} are for {self.dims}-dim vectors, these are {dims}-dim; calibrate "
                f"with --dims {dims}"
            )

    def check_center(self, source: object) -> None:
        """Refuse ranges without means (a file of an older calibrate) for binary codes,
        whose thresholds they are."""
        if self.center is None:
            raise ConfigError(f"{source} has no means (an older calibrate); calibrate again")


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def int8(vectors: np.ndarray, ranges: Ranges) -> np.ndarray:
    """int8 codes [N, D] of float vectors, each row on its own (the ranges are fixed)."""
    codes = np.rint(np.asarray(vectors, dtype=np.float32) / ranges.scale())
    return np.asarray(np.clip(codes, -127, 127), dtype=np.int8)


def dequantize(codes: np.ndarray, ranges: Ranges) -> np.ndarray:
    """float32 vectors back from int8 codes (what rescoring compares, never the codes)."""
    return np.asarray(np.asarray(codes, dtype=np.float32) * ranges.scale())


def int8_query(queries: np.ndarray, ranges: Ranges) -> np.ndarray:
    """Queries as int8 whose inner product with corpus codes ranks like the float query's
    with the corpus vectors: q · a, then each row scaled to ±127 on its own."""
    q = np.asarray(queries, dtype=np.float32) * ranges.scale()
    peak = np.maximum(np.abs(q).max(axis=1, keepdims=True), 1e-12)
    return np.asarray(np.rint(q / peak * 127.0), dtype=np.int8)


def binary(vectors: np.ndarray, ranges: Ranges | None = None) -> np.ndarray:
    """1-bit vectors, 8 to a byte ([N, ceil(D/8)]): each dimension above its threshold, the
    ranges' calibration mean (`center`) or, without one, 0. Each row on its own."""
    v = np.asarray(vectors, dtype=np.float32)
    if ranges is not None and ranges.center is not None:
        v = v - np.asarray(ranges.center, dtype=np.float32)
    return np.asarray(np.packbits(v > 0, axis=1))
