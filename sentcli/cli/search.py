"""`sentcli search`: each query's most similar corpus rows, for pipelines."""

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sentcli.cli._util import app, err, handle_errors
from sentcli.cli.options import (
    INFER_BATCH,
    BatchSizeOpt,
    DeviceOpt,
    DimsOpt,
    InferPrecisionOpt,
    MaxLengthOpt,
    ModelOpt,
    OutputFileOpt,
    QuietOpt,
    TextColumnOpt,
    inference_options,
)
from sentcli.cli.render import InferenceView, inference_summary
from sentcli.config import InferPrecision, LabelFormat


@app.command("search")
@handle_errors
def search_cli(
    queries: Annotated[
        str,
        typer.Argument(
            metavar="QUERIES",
            help="Query file (one per line, .gz ok), - for stdin, or .csv/.tsv/.jsonl/.parquet.",
        ),
    ],
    corpus: Annotated[
        str | None,
        typer.Option(
            help="The texts to search, exactly: a line file or a table (see --corpus-column).",
            show_default=False,
        ),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="An index of `sentcli index build` to search instead (approximate).",
            show_default=False,
        ),
    ] = None,
    rescore: Annotated[
        int,
        typer.Option(
            help="--index: re-rank the top k×N candidates by the float cosine (f16 vectors)."
        ),
    ] = 0,
    ef: Annotated[
        int,
        typer.Option(help="--index: candidates the graph keeps while searching (HNSW's ef)."),
    ] = 128,
    k: Annotated[int, typer.Option("-k", "--top-k", help="Results per query.")] = 10,
    threshold: Annotated[
        float | None, typer.Option(help="Keep only results with a cosine at least this.")
    ] = None,
    fmt: Annotated[
        LabelFormat,
        typer.Option(
            "--format", help="tsv: query, rank, score, row, text; jsonl: one object per result."
        ),
    ] = LabelFormat.tsv,
    output: OutputFileOpt = None,
    model: ModelOpt = None,
    text_column: TextColumnOpt = None,
    corpus_column: Annotated[
        str | None,
        typer.Option(
            help="The corpus table's text column (default: --text-column, else found by name)."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Folder for corpus vectors (default: $SENTCLI_CACHE, else ~/.cache/sentcli).",
        ),
    ] = None,
    batch_size: BatchSizeOpt = INFER_BATCH,
    max_length: MaxLengthOpt = None,
    device: DeviceOpt = None,
    precision: InferPrecisionOpt = InferPrecision.auto,
    dims: DimsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Find each query's most similar corpus texts by the cosine of their vectors (exact).

    The corpus is embedded once and kept in the cache under a hash of its bytes, the model
    and the settings: the next search of the same corpus only embeds the queries, and a
    changed corpus or model is embedded again. TSV rows are query number, rank, score,
    corpus row (both numbered from 1) and the corpus text (tabs and newlines escaped as
    \\t and \\n), no header.

    Example: sentcli search data/questions.txt --corpus data/sentences.txt -k 3

    Example: grep -i horse data/questions.txt | sentcli search - --corpus data/sentences.txt
    -k 1 | cut -f5
    """
    from sentcli import api  # imported here: --help stays free of torch

    if (corpus is None) == (index is None):
        raise typer.BadParameter("give one: --corpus FILE (exact) or --index FOLDER")
    options = inference_options(text_column, None, batch_size, max_length, device, precision, dims)
    view = InferenceView(quiet)
    if index is not None:
        with view.bar:
            found, _ = api.search_index(
                queries, index, output, model, k=k, rescore=rescore, ef=ef, threshold=threshold,
                fmt=fmt.value, options=options, on_event=view,
            )  # fmt: skip
        inference_summary("searched with", found, quiet)
        return
    if rescore:
        raise typer.BadParameter("--rescore is for --index; exact search needs none")
    assert corpus is not None
    with view.bar:
        result, cached = api.search(
            queries,
            corpus,
            output,
            model,
            k=k,
            threshold=threshold,
            fmt=fmt.value,
            corpus_column=corpus_column,
            cache=cache,
            options=options,
            on_event=view,
        )
    if cached.damaged is not None:  # shown even with --quiet: a cache folder was replaced
        err.print(
            f"[yellow]warning:[/] the corpus cache {escape(str(cached.folder))} "
            f"{escape(cached.damaged)}; the corpus was embedded again"
        )
    if len(cached.blank):  # shown even with --quiet, as other warnings
        err.print(
            f"[yellow]warning:[/] {len(cached.blank):,} of {len(cached):,} corpus rows are blank "
            "(empty or whitespace) and are never returned"
        )
    if cached.built is not None:
        cached.built.stats.blank = 0  # said just above, as corpus rows
        inference_summary("indexed the corpus:", cached.built, quiet)
    elif not quiet:
        err.print(f"corpus: {len(cached):,} rows from the cache ({cached.folder})")
    inference_summary("searched with", result, quiet)
