"""`sentcli embed`: texts → sentence vectors, streamed, in input order."""

from pathlib import Path
from typing import Annotated

import typer

from sentcli.cli._util import app, handle_errors
from sentcli.cli.options import (
    INFER_BATCH,
    BatchSizeOpt,
    DeviceOpt,
    DimsOpt,
    IdColumnOpt,
    InferPrecisionOpt,
    InputArg,
    MaxLengthOpt,
    ModelOpt,
    QuietOpt,
    TextColumnOpt,
    inference_options,
)
from sentcli.cli.render import InferenceView, inference_summary
from sentcli.config import InferPrecision, VectorCode


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
    batch_size: BatchSizeOpt = INFER_BATCH,
    max_length: MaxLengthOpt = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the vectors.")] = True,
    quantize: Annotated[
        VectorCode | None,
        typer.Option(
            help="int8: codes by per-dimension ranges (--ranges, from `sentcli calibrate`); "
            "binary: one bit a dimension, 8 to a byte (.npy uint8 [N, D/8]): above its "
            "calibration mean with --ranges, else above 0.",
            show_default=False,
        ),
    ] = None,
    ranges: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False, help="--quantize int8 or binary: the ranges file of `calibrate`."
        ),
    ] = None,
    device: DeviceOpt = None,
    precision: InferPrecisionOpt = InferPrecision.auto,
    dims: DimsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Embed texts into sentence vectors (masked mean pooling), row i for input row i.

    The input is streamed in chunks, so files larger than memory work. An empty line gets
    the vector of the empty text. Progress and a throughput line go to stderr.

    Example: sentcli embed data/sentences.txt -o vectors.npy

    Example: zcat data/imdb_unsup/train.txt.gz | sentcli embed - | head -n 2

    Example: sentcli embed data/sentences.txt --quantize binary -o bits.npy
    """
    from sentcli import api  # imported here: --help stays free of torch

    view = InferenceView(quiet)
    with view.bar:
        result = api.embed(
            input,
            output,
            model,
            normalize=normalize,
            quantize=quantize.value if quantize else None,
            ranges=ranges,
            options=inference_options(
                text_column, id_column, batch_size, max_length, device, precision, dims
            ),
            on_event=view,
        )
    inference_summary("embedded", result, quiet)
