"""`sentcli embed`: texts → sentence vectors, streamed, in input order."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from sentcli import api
from sentcli.cli import app
from sentcli.cli._util import (
    DeviceOpt,
    InferenceView,
    InferPrecision,
    QuietOpt,
    handle_errors,
    inference_summary,
)

InputArg = Annotated[
    str,
    typer.Argument(
        metavar="INPUT",
        help="Text file (one text per line, .gz ok), - for stdin, or .csv/.tsv/.jsonl/.parquet.",
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        file_okay=False,
        help="Run folder (default: $SENTCLI_MODEL, else the model shipped with sentcli).",
    ),
]
TextColumnOpt = Annotated[
    str | None, typer.Option(help="Tables: the text column (default: text/sentence/review/…).")
]
IdColumnOpt = Annotated[
    str | None, typer.Option(help="Tables: a column whose value replaces the text in the output.")
]
BatchSizeOpt = Annotated[int, typer.Option(help="Texts per batch.")]
MaxLengthOpt = Annotated[
    int | None,
    typer.Option(help="Cut texts to N tokens (default: the model's block size); cuts are counted."),
]
InferPrecisionOpt = Annotated[
    InferPrecision,
    typer.Option(help="auto: bf16 where native; int8: dynamic quantisation (CPU)."),
]


@app.command("embed")
@handle_errors
def embed_cli(
    input: InputArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help=".npy (float32 [N, D]), .jsonl, .csv or .tsv; default: JSON lines on stdout.",
        ),
    ] = None,
    model: ModelOpt = None,
    text_column: TextColumnOpt = None,
    id_column: IdColumnOpt = None,
    batch_size: BatchSizeOpt = 128,
    max_length: MaxLengthOpt = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the vectors.")] = True,
    device: DeviceOpt = None,
    precision: InferPrecisionOpt = InferPrecision.auto,
    quiet: QuietOpt = False,
) -> None:
    """Embed texts into sentence vectors (masked mean pooling), row i for input row i.

    The input is streamed in chunks, so files larger than memory work. An empty line gets
    the vector of the empty text. Progress and a throughput line go to stderr.

    Example: sentcli embed data/ag_news/titles.txt -o vectors.npy

    Example: cat reviews.txt | sentcli embed - | head -n 2
    """
    view = InferenceView(quiet)
    with view.bar:
        result = api.embed(
            input,
            output,
            model,
            text_column=text_column,
            id_column=id_column,
            batch_size=batch_size,
            max_length=max_length,
            normalize=normalize,
            device=device.value if device else "auto",
            precision=precision.value,
            stdout=sys.stdout.buffer,
            on_event=view,
        )
    inference_summary("embedded", result, quiet)
