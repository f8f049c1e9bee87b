"""The `sentcli` command line: one Typer app, one module per command (only cli/ prints)."""

from typing import Annotated

import typer

from sentcli import __version__

app = typer.Typer(
    name="sentcli",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sentcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks (also SENTCLI_DEBUG=1).")
    ] = False,
) -> None:
    """Build small transformer sentence encoders end to end.

    Example, from text to a topic classifier:

        sentcli build-tokenizer data/imdb_unsup data/ag_news -o tok.json

        sentcli pretrain data/imdb_unsup --tokenizer tok.json -o runs/lm

        sentcli train-encoder --task topic=data/ag_news --init runs/lm -o runs/topic
    """
    if debug:
        import os

        os.environ["SENTCLI_DEBUG"] = "1"


# Importing the command modules registers their commands on `app`.
from sentcli.cli import (  # noqa: E402,F401
    build_tokenizer,
    embed,
    evaluate,
    import_hf,
    predict,
    pretrain,
    report,
    train_encoder,
    train_mtl,
)


def main() -> None:
    app()
