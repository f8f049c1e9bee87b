"""`sentcli evaluate`: scores of a trained run on its test splits or on given data."""

import json
from pathlib import Path
from typing import Annotated

import typer

from sentcli import api
from sentcli.cli._util import app, handle_errors, out
from sentcli.cli.options import DeviceOpt
from sentcli.cli.render import confusion_table, per_class_table
from sentcli.config import TaskConfig


@app.command("evaluate")
@handle_errors
def evaluate_cli(
    model: Annotated[
        Path, typer.Option("--model", "-m", file_okay=False, help="Run folder to evaluate.")
    ],
    task: Annotated[
        list[str] | None,
        typer.Option(help="NAME=SOURCE to evaluate on (default: the run's own test splits)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 64,
    device: DeviceOpt = None,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix per task.

    Without --task, each task is scored on the test split its run was trained with
    (validation when there is none); with --task, on that source's test split, else its
    validation split, else all its rows.

    Example: sentcli evaluate --model runs/mtl --task sentiment=data/imdb --json
    """
    specs = [TaskConfig(*api.parse_task_spec(t)) for t in task or []]
    result = api.evaluate(model, specs or None, batch_size, device.value if device else "auto")
    if as_json:
        out.print_json(json.dumps(result))
        return
    for name, m in result["tasks"].items():
        n = sum(m["per_class"][c]["support"] for c in m["per_class"])
        out.print(
            f"{name} ({m['source']}, {m['split']}, {n:,} texts): accuracy {m['accuracy']:.4f} | "
            f"macro-F1 {m['macro_f1']:.4f}"
        )
        out.print(per_class_table(f"{name} per class", m["per_class"]))
        out.print(confusion_table(f"{name} confusion", m["confusion"], m["label_names"]))
