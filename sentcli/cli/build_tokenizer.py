"""`sentcli build-tokenizer`: train a BPE, WordPiece or Unigram tokenizer on text files."""

from pathlib import Path
from typing import Annotated

import typer

from sentcli.cli._util import app, err, handle_errors, out
from sentcli.cli.options import OverwriteOpt, QuietOpt, TextColOpt
from sentcli.cli.render import TokenizerView, progress
from sentcli.config import TokenizerKind


@app.command("build-tokenizer")
@handle_errors
def build_tokenizer_cli(
    data: Annotated[
        list[str], typer.Argument(help="Files, folders or hf:NAME to read texts from.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", dir_okay=False, help="tokenizer.json to write.")
    ],
    kind: Annotated[TokenizerKind, typer.Option(help="Subword model.")] = TokenizerKind.bpe,
    vocab_size: Annotated[int, typer.Option(help="Tokens in the vocabulary.")] = 8000,
    min_frequency: Annotated[int, typer.Option(help="Least count for a merge/word.")] = 2,
    lowercase: Annotated[
        bool, typer.Option("--lowercase", help="Lowercase before splitting.")
    ] = False,
    text_column: TextColOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a subword tokenizer (BPE, WordPiece or Unigram) on text files.

    Special tokens [PAD] [UNK] [BOS] [EOS] [MASK] get ids 0-4.

    Example: sentcli build-tokenizer data/imdb_unsup data/ag_news --vocab-size 8000 -o tok.json
    """
    from sentcli import api  # imported here: --help stays free of torch

    with progress(quiet) as bar:
        summary = api.build_tokenizer(
            data, output, kind.value, vocab_size, min_frequency, lowercase, text_column,
            TokenizerView(bar), overwrite,
        )  # fmt: skip
    out.print(f"wrote {output}")
    out.print(f"vocab size          {summary.vocab_size:,}")
    out.print(f"texts read          {summary.texts:,}")
    out.print(f"mean tokens/text    {summary.mean_tokens:.1f}")
    out.print(f"unknown-token share {summary.unk_share:.4%}")
    if summary.unk_share > 0.01:
        err.print("warning: over 1% unknown tokens; try --kind bpe (byte-level, never unknown)")
