"""`sentcli calibrate`: per-dimension ranges and means of a model's vectors, for int8 and
binary codes."""

from pathlib import Path
from typing import Annotated

import typer

from sentcli.cli._util import app, handle_errors, out
from sentcli.cli.options import (
    INFER_BATCH,
    BatchSizeOpt,
    DeviceOpt,
    DimsOpt,
    InferPrecisionOpt,
    InputArg,
    MaxLengthOpt,
    ModelOpt,
    QuietOpt,
    TextColumnOpt,
    inference_options,
)
from sentcli.cli.render import InferenceView, inference_summary
from sentcli.config import InferPrecision


@app.command("calibrate")
@handle_errors
def calibrate_cli(
    input: InputArg,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", dir_okay=False, help="The ranges file (.json)."),
    ],
    model: ModelOpt = None,
    text_column: TextColumnOpt = None,
    dims: DimsOpt = None,
    batch_size: BatchSizeOpt = INFER_BATCH,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = None,
    precision: InferPrecisionOpt = InferPrecision.auto,
    quiet: QuietOpt = False,
) -> None:
    """Compute each dimension's range and mean of the model's normalised vectors over a
    calibration corpus (a few thousand texts like the ones to embed), for `embed --quantize
    int8` (the ranges) and `--quantize binary` (the means, each bit's threshold).

    The ranges belong to the model (its fingerprint is in the file) and the width (--dims):
    codes never take their ranges from the texts being embedded, so a text's codes do not
    depend on the rest of its batch.

    Example: zcat data/imdb_unsup/train.txt.gz | head -n 500 | sentcli calibrate - -o ranges.json

    Example: sentcli embed data/sentences.txt --quantize int8 --ranges ranges.json -o codes.npy
    """
    from sentcli import api  # imported here: --help stays free of torch

    view = InferenceView(quiet)
    with view.bar:
        ranges, result = api.calibrate(
            input,
            output,
            model,
            options=inference_options(
                text_column, None, batch_size, max_length, device, precision, dims
            ),
            on_event=view,
        )
    inference_summary("calibrated on", result, quiet)
    out.print(f"wrote {output} ({ranges.dims} dims, {ranges.rows:,} rows)")
