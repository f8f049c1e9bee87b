"""Similarity of texts at inference: the cosine of each pair, streamed in input order, and
the cosine matrix of a few sentences."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO

import numpy as np
import torch.nn as nn

from sentcli.config import InferenceOptions, RunConfig
from sentcli.errors import ConfigError
from sentcli.events import OnEvent
from sentcli.inference.embed import (
    BatchFn,
    InferenceResult,
    cosine_pipeline,
    run_inference,
    vector_fn,
)
from sentcli.inference.inputs import Chunk, PairInput, TextInput
from sentcli.inference.outputs import Sink, check_output
from sentcli.model import LanguageModel, MultiTaskModel

MATRIX_MAX = 100
"""--matrix is for a few sentences: a table of 100 × 100 is already past reading."""


def pair_cosines(
    first: str,
    second: str | None,
    output: Path | None,
    model: Path | None,
    pair_columns: list[str] | None,
    options: InferenceOptions,
    on_event: OnEvent,
) -> InferenceResult:
    """The cosine of each pair, in order, one per line, to `output` or stdout."""
    if pair_columns is not None and len(pair_columns) != 2:
        raise ConfigError(f"--pair-columns {','.join(pair_columns)}: give two columns, A,B")
    if second is not None and first == second == "-":
        raise ConfigError("only one of the two inputs can be stdin (-)")

    def source() -> PairInput:
        return PairInput(first, second, pair_columns, options.stdin)

    formats = (".txt", ".tsv")
    check_output(output, formats, [first] + ([second] if second else []))
    return run_inference(
        first, output, model, formats, options, cosine_pipeline(options.dims), on_event, source
    )


class _Collect:
    """A sink that keeps the vectors in memory (the matrix is of a few sentences)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.vectors: list[np.ndarray] = []

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        self.texts += chunk.texts
        self.vectors.append(values)
        if len(self.texts) > MATRIX_MAX:  # stdin: stop reading as soon as it is too long
            raise ConfigError(
                f"--matrix is for a few sentences (at most {MATRIX_MAX}): use `sentcli "
                "similarity A B` for pairs"
            )

    def close(self) -> None:
        pass


def cosine_matrix(
    file: str, model: Path | None, options: InferenceOptions, on_event: OnEvent
) -> tuple[list[str], np.ndarray, InferenceResult]:
    """The texts of a line file (or stdin), at most MATRIX_MAX, and their cosine matrix."""
    probe = TextInput(file, stdin=options.stdin)
    if probe.total is not None and probe.total > MATRIX_MAX:
        raise ConfigError(
            f"{file} has {probe.total:,} lines; --matrix is for a few sentences (at most "
            f"{MATRIX_MAX}): use `sentcli similarity A B` for pairs"
        )
    sink = _Collect()

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        assert isinstance(net, MultiTaskModel | LanguageModel)
        return vector_fn(net, normalize=True, dims=options.dims), lambda f: sink

    def source() -> TextInput:
        return probe

    # nothing is written (the sink keeps it); read no more than a chunk past the limit
    quiet = replace(options, stdout=io.BytesIO(), chunk_size=MATRIX_MAX + 1)
    result = run_inference(file, None, model, (), quiet, make, on_event, source)
    if not sink.vectors:  # under torchrun, a rank other than the main one: no rows here
        return [], np.zeros((0, 0), dtype=np.float32), result
    v = np.concatenate(sink.vectors)  # the sink refused more than MATRIX_MAX rows
    return sink.texts, v @ v.T, result
