"""`sentcli similarity`: the cosine of text pairs, streamed; or the matrix of a few sentences."""

import json
import unicodedata
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sentcli.cli._util import app, err, handle_errors, out
from sentcli.cli.options import (
    INFER_BATCH,
    BatchSizeOpt,
    DeviceOpt,
    DimsOpt,
    InferPrecisionOpt,
    MaxLengthOpt,
    ModelOpt,
    QuietOpt,
    inference_options,
)
from sentcli.cli.render import InferenceView, inference_summary
from sentcli.config import InferPrecision, MatrixFormat


def visible(text: str) -> str:
    """`text` with control and format characters (an escape sequence, a bell, a bidi
    override) written as escapes: a table row cannot drive the terminal."""
    return "".join(
        c if unicodedata.category(c)[0] != "C" else c.encode("unicode_escape").decode()
        for c in text
    )


def matrix_table(texts: list[str], matrix: list[list[float]]) -> Table:
    """Cosines with the texts as row labels and their numbers as column heads."""
    table = Table(title="cosine similarity", title_justify="left")
    table.add_column("#", justify="right", min_width=2, no_wrap=True)
    table.add_column("text", max_width=32, no_wrap=True, overflow="ellipsis")
    for j in range(len(texts)):
        table.add_column(str(j + 1), justify="right", min_width=5, no_wrap=True)
    for i, (text, row) in enumerate(zip(texts, matrix, strict=True)):
        cells = [
            f"[bold]{c:.2f}[/]" if i != j and c >= 0.8 else f"{c:.2f}" for j, c in enumerate(row)
        ]
        table.add_row(str(i + 1), escape(visible(text)), *cells)
    return table


def matrix_text(texts: list[str], matrix: list[list[float]], fmt: MatrixFormat) -> str:
    """Every value: one TSV row of cosines per text (for numpy.loadtxt, cut, paste), or one
    JSON object with the texts and the matrix."""
    if fmt == MatrixFormat.json:
        return json.dumps({"texts": texts, "matrix": matrix}, ensure_ascii=False) + "\n"
    return "".join("\t".join(f"{c:.6f}" for c in row) + "\n" for row in matrix)


@app.command("similarity")
@handle_errors
def similarity_cli(
    first: Annotated[
        str | None,
        typer.Argument(
            metavar="A",
            help="Line file (- for stdin) paired line by line with B; without B: a table with "
            "two text columns, or lines of text1<TAB>text2.",
        ),
    ] = None,
    second: Annotated[str | None, typer.Argument(metavar="[B]", help="Second line file.")] = None,
    matrix: Annotated[
        str | None,
        typer.Option(
            "--matrix", metavar="FILE", help="A few sentences (one per line): their cosine matrix."
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="--matrix: the heatmap to write (.png, .pdf, .svg, .jpg…) "
            "[default: similarity.png]",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help=".txt or .tsv (default: stdout)."),
    ] = None,
    pair_columns: Annotated[
        str | None, typer.Option(help="A,B: a table's two text columns (default: by name).")
    ] = None,
    fmt: Annotated[
        MatrixFormat | None,
        typer.Option(
            "--format",
            help="--matrix: a table, or every value as TSV rows or JSON [default: a table on "
            "a terminal, tsv otherwise]",
        ),
    ] = None,
    model: ModelOpt = None,
    batch_size: BatchSizeOpt = INFER_BATCH,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = None,
    precision: InferPrecisionOpt = InferPrecision.auto,
    dims: DimsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The cosine similarity of each text pair (L2-normalised sentence vectors), one per
    line, in input order; or, with --matrix, the cosine matrix of a few sentences as a table
    and a heatmap.

    Example: sentcli similarity data/stsb/validation.csv.gz > cosines.txt

    Example: printf 'A man plays a guitar.\\tSomeone plays music.\\n' | sentcli similarity -

    Example: sentcli similarity --matrix data/sentences.txt --plot similarity.png
    """
    from sentcli import api  # imported here: --help stays free of torch

    options = inference_options(None, None, batch_size, max_length, device, precision, dims)
    if matrix is not None:
        if first is not None or output is not None or pair_columns is not None:
            raise typer.BadParameter(
                "--matrix FILE takes no pairs, -o or --pair-columns (it writes --plot)",
                param_hint="--matrix",
            )
        plot = plot or Path("similarity.png")
        fmt = fmt or (MatrixFormat.table if out.is_terminal else MatrixFormat.tsv)
        texts, cos, result = api.similarity_matrix(matrix, model, plot=plot, options=options)
        if not texts:  # under torchrun, a rank other than the main one: it only computed
            return
        if fmt == MatrixFormat.table:
            out.print(matrix_table(texts, cos.tolist()))
        else:
            out.file.write(matrix_text(texts, cos.tolist(), fmt))
        err.print(f"wrote {plot}")
        inference_summary("compared", result, quiet=True)  # only a cut texts' warning
        return
    if plot is not None:
        raise typer.BadParameter("--plot goes with --matrix FILE", param_hint="--plot")
    if fmt is not None:
        raise typer.BadParameter("--format goes with --matrix FILE", param_hint="--format")
    if first is None:
        raise typer.BadParameter("give pairs (A [B]) or --matrix FILE", param_hint="A")
    columns = [c.strip() for c in pair_columns.split(",")] if pair_columns else None
    view = InferenceView(quiet)
    with view.bar:
        result = api.similarity(
            first, second, output, model, pair_columns=columns, options=options, on_event=view
        )
    inference_summary("compared", result, quiet)
