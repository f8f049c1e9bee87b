"""`sentcli predict`: one label (and probability) per input row, for pipelines."""

from typing import Annotated

import typer

from sentcli.cli._util import app, handle_errors
from sentcli.cli.options import (
    INFER_BATCH,
    BatchSizeOpt,
    DeviceOpt,
    IdColumnOpt,
    InferPrecisionOpt,
    InputArg,
    MaxLengthOpt,
    ModelOpt,
    OutputFileOpt,
    QuietOpt,
    TextColumnOpt,
    inference_options,
)
from sentcli.cli.render import InferenceView, inference_summary
from sentcli.config import InferPrecision, LabelFormat


@app.command("predict")
@handle_errors
def predict_cli(
    input: InputArg,
    task: Annotated[
        str | None, typer.Option(help="Which head (needed when the model has several tasks).")
    ] = None,
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option(help="Labels per row, most probable first.")] = 1,
    fmt: Annotated[
        LabelFormat,
        typer.Option("--format", help="tsv: label<TAB>probability; jsonl: one object per row."),
    ] = LabelFormat.tsv,
    output: OutputFileOpt = None,
    text_column: TextColumnOpt = None,
    id_column: IdColumnOpt = None,
    batch_size: BatchSizeOpt = INFER_BATCH,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = None,
    precision: InferPrecisionOpt = InferPrecision.auto,
    quiet: QuietOpt = False,
) -> None:
    """Predict a task's label for every input row, in input order.

    TSV rows are label<TAB>probability (then the next labels with --top-k; the id first
    with --id-column), no header, so `cut -f1` gives the labels.

    Example: echo "great movie" | sentcli predict - --task sentiment

    Example: sentcli predict data/sentences.txt --model runs/mtl --task topic --top-k 2
    --format jsonl
    """
    from sentcli import api  # imported here: --help stays free of torch

    view = InferenceView(quiet)
    with view.bar:
        result = api.predict(
            input,
            output,
            model,
            task,
            top_k=top_k,
            fmt=fmt.value,
            options=inference_options(
                text_column, id_column, batch_size, max_length, device, precision
            ),
            on_event=view,
        )
    inference_summary("predicted", result, quiet)
