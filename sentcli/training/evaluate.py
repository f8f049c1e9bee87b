"""Scoring a trained run on a source it may not have trained on (`sentcli evaluate --task`):
a task's head on labelled texts, or any run that embeds on sentence pairs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tokenizers import Tokenizer

from sentcli import checkpoint as ckpt
from sentcli import files
from sentcli.config import TaskConfig
from sentcli.data.batching import column_array, encode_rows
from sentcli.data.pairs import SIDES, pair_table, shape_of
from sentcli.data.sources import absolute
from sentcli.data.tasks import load_eval_split
from sentcli.device import resolve_device, resolve_precision
from sentcli.errors import ConfigError, DiskFullError
from sentcli.inference.embed import (
    apply_batched,
    check_dims,
    predict_logits,
    resolve_model,
    vector_fn,
)
from sentcli.metrics import plot_scatter
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
    dims: int | None = None,
) -> tuple[str, dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Score any run that embeds on a source with a gold standard (its kind's objective
    says whether it has one): its test split, else validation, else all its rows. Returns
    the split, the metrics and (scored pairs) each pair's cosine and gold score. `no_head`:
    the message for a source of labelled texts; `dims`: score the vectors' first `dims`
    dimensions."""
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
    embed = vector_fn(model, normalize=False, dims=dims)  # type: ignore[arg-type]
    sides = [
        apply_batched(embed, encode_rows(tok, ds, block, c), batch_size, device, dtype)
        for c in SIDES[: len(shape.pair_columns)]
    ]
    target = column_array(ds, "score", np.float64) if shape.score_column else None
    metrics = {"kind": str(shape.kind), "pairs": len(ds), **kind.metrics(sides, target)}
    cos = cosines(sides[0], sides[1]) if target is not None else None
    return split, metrics, cos, target


def evaluate_run(
    model_dir: Path | None,
    tasks: list[TaskConfig] | None,
    batch_size: int,
    device: str,
    plots: Path | None,
    precision: str | None,
    dims: int | None = None,
) -> dict[str, Any]:
    """`sentcli evaluate`: each task of a run on the given sources or on the test splits the
    run recorded (see api.evaluate)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    if plots is not None:  # made with its parents when needed: probe the nearest that exists
        files.check_writable(plots, files.existing_folder(plots))
    path, origin = resolve_model(model_dir)
    config, model, tok, _ = ckpt.load_run(path)
    note = check_dims(config, dims) if dims is not None else None
    known = {t.name: t for t in config.tasks}
    own = {t.name: objective(t) for t in config.tasks}  # plain text: no gold to score against
    specs = tasks or [
        t for t in config.tasks if own[t.name].outputs == "logits" or own[t.name].scorable
    ]
    for t in specs if not tasks else []:
        if not t.source.startswith("hf:") and not Path(t.source).exists():
            raise ConfigError(
                f"task {t.name}'s recorded source {t.source} does not exist here (moved, or "
                f"recorded relative to another folder); pass --task {t.name}=SOURCE"
            )
    heads = list(model.heads) if isinstance(model, MultiTaskModel) else []
    no_heads = (
        f"{path} has no task heads (a pretraining or import-hf run); evaluate a run of "
        "train-encoder or train-mtl, or give --task NAME=SOURCE with sentence pairs"
    )
    if not specs:
        raise ConfigError(no_heads)
    dev = resolve_device(device)
    dtype = resolve_precision(precision or config.train.precision, dev)
    model.to(dev)
    results: dict[str, Any] = {}
    for s in specs:
        same = s.name in known and known[s.name].source == absolute(s.source)
        spec = known[s.name] if same else s
        if s.name in heads and own[s.name].outputs == "logits":
            results[s.name] = evaluate_head(model, tok, known[s.name], s, batch_size, dev, dtype)
            continue
        unknown = (
            f"{s.source} holds labelled texts, but task {s.name} of {path} is a "
            f"{known[s.name].kind} similarity task without a head; give it sentence pairs"
            if s.name in known
            else f"{path} has no task {s.name}; its tasks: {', '.join(known)}"
        )
        split, metrics, cos, gold = evaluate_pairs(
            model, tok, spec, config.model.block_size, batch_size, dev, dtype,
            unknown if known else no_heads, dims,
        )  # fmt: skip
        if cos is not None and gold is not None:
            folder = plots or (Path("report") if origin == "the default model" else path / "report")
            title = f"{s.name} ({split}, Spearman {100 * metrics['spearman']:.1f})"
            target = folder / f"similarity_{s.name}.png"
            try:  # a read-only run folder: the scores still count, the plot is said missing
                folder.mkdir(parents=True, exist_ok=True)
                plot_scatter(target, cos, gold, title)
                metrics["plot"] = str(target)
            except (OSError, DiskFullError) as e:  # a read-only folder, a full disk
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                metrics["plot_error"] = f"{target} not written ({why})"
        results[s.name] = {"source": s.source, "split": split, **metrics}
    out: dict[str, Any] = {"model": str(path), "tasks": results}
    return out | ({"dims": dims} if dims is not None else {}) | ({"warning": note} if note else {})
