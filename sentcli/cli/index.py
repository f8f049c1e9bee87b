"""`sentcli index build`: a persistent approximate nearest-neighbour index of a corpus."""

from pathlib import Path
from typing import Annotated

import typer

from sentcli.cli._util import SentcliGroup, app, err, handle_errors, out
from sentcli.cli.options import (
    INFER_BATCH,
    BatchSizeOpt,
    DeviceOpt,
    DimsOpt,
    InferPrecisionOpt,
    MaxLengthOpt,
    ModelOpt,
    OverwriteOpt,
    QuietOpt,
    TextColumnOpt,
    inference_options,
)
from sentcli.cli.render import InferenceView, inference_summary
from sentcli.config import IndexDtype, InferPrecision

index_app = typer.Typer(
    cls=SentcliGroup,
    no_args_is_help=True,
    help="Persistent vector indexes for `sentcli search --index` (HNSW, f16/i8/b1).",
)
app.add_typer(index_app, name="index")


@index_app.command("build")
@handle_errors
def build_cli(
    corpus: Annotated[
        str,
        typer.Argument(
            metavar="CORPUS",
            help="A line file or table of texts, or a .npy of vectors `embed` wrote.",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The index folder.")],
    dtype: Annotated[
        IndexDtype,
        typer.Option(help="f16; i8 (int8 codes); b1 (1 bit a dimension: use --rescore)."),
    ] = IndexDtype.i8,
    model: ModelOpt = None,
    dims: DimsOpt = None,
    texts: Annotated[
        str | None,
        typer.Option(help="A .npy corpus: the file its vectors were embedded from (the rows)."),
    ] = None,
    ranges: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="i8, b1: `sentcli calibrate`'s ranges and means (default: the corpus's).",
        ),
    ] = None,
    connectivity: Annotated[int, typer.Option(help="HNSW links per node (M).")] = 16,
    text_column: TextColumnOpt = None,
    batch_size: BatchSizeOpt = INFER_BATCH,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = None,
    precision: InferPrecisionOpt = InferPrecision.auto,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed a corpus and build an approximate nearest-neighbour index of it (usearch HNSW).

    The folder holds the graph, every row's vector at f16 (for --rescore, memory-mapped),
    the row texts, the model's fingerprint and, for i8 and b1, the per-dimension ranges and
    means (b1's bits: above each dimension's mean). It is
    built beside the target and renamed into place whole: an interrupted build leaves no
    index. Search it with `sentcli search QUERIES --index FOLDER`.

    Example: sentcli index build data/sentences.txt -o sentences.index --dtype i8

    Example: sentcli search data/questions.txt --index sentences.index -k 3 --rescore 4
    """
    from sentcli import api  # imported here: --help stays free of torch

    view = InferenceView(quiet)
    with view.bar:
        meta, result = api.index_build(
            corpus, output, model, dtype=dtype.value, overwrite=overwrite, texts=texts,
            ranges=ranges, connectivity=connectivity,
            options=inference_options(
                text_column, None, batch_size, max_length, device, precision, dims
            ),
            on_event=view,
        )  # fmt: skip
    if result is not None:
        result.output = None  # the index folder is said below
        inference_summary("embedded the corpus:", result, quiet)
    rows, indexed = meta["rows"], meta["indexed"]
    if rows != indexed:
        err.print(
            f"[yellow]warning:[/] {rows - indexed:,} of {rows:,} rows are blank and are "
            "never returned"
        )
    out.print(f"wrote {output} ({meta['dtype']}, {meta['dims']} dims, {indexed:,} rows)")
