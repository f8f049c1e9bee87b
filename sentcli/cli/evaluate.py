"""`sentcli evaluate`: scores of a trained run on its test splits or on given data."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sentcli.cli._util import app, err, handle_errors, out
from sentcli.cli.options import (
    DeviceOpt,
    ModelOpt,
    PairColumnsOpt,
    ScoreColumnOpt,
    split_columns,
)
from sentcli.cli.render import SCORES, confusion_table, per_class_table, score
from sentcli.config import Precision, TaskConfig


@app.command("evaluate")
@handle_errors
def evaluate_cli(
    model: ModelOpt = None,
    task: Annotated[
        list[str] | None,
        typer.Option(help="NAME=SOURCE to evaluate on (default: the run's own test splits)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 64,
    device: DeviceOpt = None,
    precision: Annotated[
        Precision | None, typer.Option(help="Autocast dtype (default: the run's own).")
    ] = None,
    dims: Annotated[
        int | None,
        typer.Option(
            help="Similarity tasks: score each vector's first N dimensions, re-normalised "
            "(task heads read the whole vector).",
            show_default=False,
        ),
    ] = None,
    pair_columns: PairColumnsOpt = None,
    score_column: ScoreColumnOpt = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Folder for the similarity scatter plots (default: the run's report/; "
            "./report/ for the shipped model).",
        ),
    ] = None,
) -> None:
    """Score a run per task: accuracy, macro-F1, per-class precision/recall/F1 and the
    confusion matrix of a classification task; Spearman and Pearson ×100 of cosine for
    scored pairs (STS), recall@1 and MRR for positive pairs.

    Without --task, each task is scored on the test split its run was trained with
    (validation when there is none); with --task, on that source's test split, else its
    validation split, else all its rows. Pair tasks work with any run that embeds (LM,
    encoder, imported, the default model), whether or not it was trained on them.

    Example: sentcli evaluate --model runs/mtl --task sentiment=data/imdb --json

    Example: sentcli evaluate --task sts=data/stsb
    """
    from sentcli import api  # imported here: --help stays free of torch

    pairs = split_columns(pair_columns) or []
    specs = [
        TaskConfig(*api.parse_task_spec(t), pair_columns=pairs, score_column=score_column)
        for t in task or []
    ]
    dev = device.value if device else "auto"
    prec = precision.value if precision else None
    result = api.evaluate(model, specs or None, batch_size, dev, plots, prec, dims)
    if "warning" in result:  # on stderr, also with --json
        err.print(f"[yellow]warning:[/] {escape(result['warning'])}")
    if as_json:
        out.print_json(json.dumps(result))
        return
    for name, m in result["tasks"].items():
        if "confusion" not in m:
            scores = " | ".join(
                f"{label} {score(k, m[k])}" for k, label in SCORES.items() if k in m
            )
            at = f", first {result['dims']} dims" if "dims" in result else ""
            out.print(f"{name} ({m['source']}, {m['split']}, {m['pairs']:,} pairs{at}): {scores}")
            if "plot" in m:
                out.print(f"wrote {m['plot']}")
            if "plot_error" in m:
                err.print(f"[yellow]warning:[/] {escape(m['plot_error'])}")
            continue
        n = sum(m["per_class"][c]["support"] for c in m["per_class"])
        out.print(
            f"{name} ({m['source']}, {m['split']}, {n:,} texts): accuracy {m['accuracy']:.4f} | "
            f"macro-F1 {m['macro_f1']:.4f}"
        )
        out.print(per_class_table(f"{name} per class", m["per_class"]))
        out.print(confusion_table(f"{name} confusion", m["confusion"], m["label_names"]))
