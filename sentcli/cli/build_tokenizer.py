"""`sentcli build-tokenizer`: train a BPE, WordPiece or Unigram tokenizer on text files."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sentcli import api
from sentcli.cli import app
from sentcli.cli._util import TextColOpt, err, handle_errors, out, progress


class Kind(StrEnum):
    bpe = "bpe"
    wordpiece = "wordpiece"
    unigram = "unigram"


@app.command("build-tokenizer")
@handle_errors
def build_tokenizer_cli(
    data: Annotated[
        list[str], typer.Argument(help="Files, folders or hf:NAME to read texts from.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", dir_okay=False, help="tokenizer.json to write.")
    ],
    kind: Annotated[Kind, typer.Option(help="Subword model.")] = Kind.bpe,
    vocab_size: Annotated[int, typer.Option(help="Tokens in the vocabulary.")] = 8000,
    min_frequency: Annotated[int, typer.Option(help="Least count for a merge/word.")] = 2,
    lowercase: Annotated[
        bool, typer.Option("--lowercase", help="Lowercase before splitting.")
    ] = False,
    text_column: TextColOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a subword tokenizer (BPE, WordPiece or Unigram) on text files.

    Special tokens [PAD] [UNK] [BOS] [EOS] [MASK] get ids 0-4.

    Example: sentcli build-tokenizer data/imdb_unsup data/ag_news --vocab-size 8000 -o tok.json
    """
    with progress(quiet) as bar:
        task = bar.add_task("reading texts", total=None, info="")

        def on_event(event: object) -> None:
            if isinstance(event, dict) and event.get("kind") == "progress":
                bar.update(task, completed=event["texts"])

        summary = api.build_tokenizer(
            data, output, kind.value, vocab_size, min_frequency, lowercase, text_column, on_event
        )
    out.print(f"wrote {output}")
    out.print(f"vocab size          {summary.vocab_size:,}")
    out.print(f"texts read          {summary.texts:,}")
    out.print(f"mean tokens/text    {summary.mean_tokens:.1f}")
    out.print(f"unknown-token share {summary.unk_share:.4%}")
    if summary.unk_share > 0.01:
        err.print("warning: over 1% unknown tokens; try --kind bpe (byte-level, never unknown)")
