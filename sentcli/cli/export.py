"""`sentcli export`: a run out of sentcli, as an ONNX graph or a sentence-transformers folder."""

from pathlib import Path
from typing import Annotated

import typer

from sentcli.cli._util import app, handle_errors, out
from sentcli.cli.options import OverwriteOpt
from sentcli.config import ExportFormat, Quantize


@app.command("export")
@handle_errors
def export_cli(
    run: Annotated[
        Path | None,
        typer.Argument(file_okay=False, help="Run folder (default: the default model)."),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", file_okay=False, help="Folder to write.")
    ] = Path("export"),
    format: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="onnx (any run) or sentence-transformers."),
    ] = ExportFormat.onnx,
    quantize: Annotated[
        Quantize | None,
        typer.Option(help="ONNX: also write model_int8.onnx (onnxruntime's dynamic int8)."),
    ] = None,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--no-normalize", help="L2-normalise the sentence vectors, as embed does."
        ),
    ] = True,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a run for use outside sentcli: an ONNX graph, or a sentence-transformers folder.

    --format onnx takes every run that embeds (pretraining, encoder, multi-task, imported,
    the default model): model.onnx (input_ids and attention_mask in; the sentence vector
    and each head's probabilities out; batch and length dynamic), the run's tokenizer.json
    and sentcli_export.json; onnxruntime and tokenizers alone then embed. It needs the onnx
    extra: pip install 'sentcli\\[onnx]'.

    --format sentence-transformers takes imported BERT-family runs and their fine-tunes:
    a folder that SentenceTransformer(DIR) loads with no custom code.

    Example: sentcli export runs/mtl -o runs/mtl-onnx --quantize int8

    Example: sentcli export runs/minilm -o runs/minilm-st --format sentence-transformers
    """
    from sentcli import api  # imported here: --help stays free of torch

    r = api.export(run, output, format.value, quantize is not None, normalize, overwrite)
    heads = (
        f"; heads: {', '.join(r['labels'])}" if r["labels"] and format == ExportFormat.onnx else ""
    )
    out.print(
        f"wrote {output} ({r['format']}): vectors {'L2-normalised' if normalize else 'raw'}, "
        f"{r['pooling']} pooling, up to {r['max_length']} tokens{heads}"
    )
