"""Scoring a trained run on a source it may not have trained on (`sentcli evaluate --task`):
a task's head on labelled texts, or any run that embeds on sentence pairs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tokenizers import Tokenizer

from sentcli.config import TaskConfig
from sentcli.data.batching import column_array, encode_rows
from sentcli.data.pairs import SIDES, pair_table, shape_of
from sentcli.data.tasks import load_eval_split
from sentcli.errors import ConfigError
from sentcli.inference.embed import apply_batched, predict_logits, vector_fn
from sentcli.model import MultiTaskModel
from sentcli.objectives import objective
from sentcli.objectives.classification import scores
from sentcli.objectives.scored import cosines


def evaluate_head(
    model: nn.Module,
    tok: Tokenizer,
    own: TaskConfig,
    spec: TaskConfig,
    batch_size: int,
    dev: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, Any]:
    """A head's scores on `spec`'s source (labels mapped to the run's label names)."""
    assert isinstance(model, MultiTaskModel)
    names = own.label_names
    split, ds = load_eval_split(spec.name, spec.source, spec.text_column, spec.label_column, names)
    y = column_array(ds, "label", np.int64)
    seqs = encode_rows(tok, ds, model.config.block_size)
    logits = predict_logits(model, spec.name, seqs, batch_size, dev, dtype)
    return {"source": spec.source, "split": split, **scores(logits, y, names, True)}


def evaluate_pairs(
    model: torch.nn.Module,
    tok: Tokenizer,
    spec: TaskConfig,
    block: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    no_head: str,
) -> tuple[str, dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Score any run that embeds on a source with a gold standard (its kind's objective
    says whether it has one): its test split, else validation, else all its rows. Returns
    the split, the metrics and (scored pairs) each pair's cosine and gold score. `no_head`:
    the message for a source of labelled texts."""
    shape, splits, _ = shape_of(spec)
    kind = objective(replace(spec, kind=shape.kind, pair_columns=shape.pair_columns))
    if kind.outputs == "logits":
        raise ConfigError(no_head)  # labelled texts need the task's head
    if not kind.scorable:
        raise ConfigError(
            f"{spec.source} holds plain text: there is nothing to score it against; give "
            "scored pairs (sentence1, sentence2, score) or positive pairs"
        )
    split = next(s for s in ("test", "validation", "train") if s in splits)
    ds = pair_table(splits[split], shape, f"{spec.source} ({split})")
    model.eval()
    embed = vector_fn(model, normalize=False)  # type: ignore[arg-type]
    sides = [
        apply_batched(embed, encode_rows(tok, ds, block, c), batch_size, device, dtype)
        for c in SIDES[: len(shape.pair_columns)]
    ]
    target = column_array(ds, "score", np.float64) if shape.score_column else None
    metrics = {"kind": str(shape.kind), "pairs": len(ds), **kind.metrics(sides, target)}
    cos = cosines(sides[0], sides[1]) if target is not None else None
    return split, metrics, cos, target
