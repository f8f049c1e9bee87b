"""The `sentcli` command line: one Typer app (cli/_util.py), one module per command; only
cli/ prints."""

# Importing the command modules registers their commands on `app`.
from sentcli.cli import (  # noqa: F401
    build_tokenizer,
    calibrate,
    embed,
    evaluate,
    export,
    import_hf,
    index,
    predict,
    pretrain,
    report,
    search,
    similarity,
    train_encoder,
    train_mtl,
)
from sentcli.cli._util import app

__all__ = ["app", "main"]


def main() -> None:
    app()
