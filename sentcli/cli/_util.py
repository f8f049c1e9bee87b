"""What every command shares: the Typer app, the consoles, error handling and exit codes,
and turning a command's parameters into config options."""

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sentcli import __version__
from sentcli.config import ModelConfig, TrainConfig
from sentcli.errors import SentcliError

# Under torchrun only rank 0 speaks (every rank runs the same command).
_SILENT = os.environ.get("RANK", "0") != "0"
out = Console(highlight=False, soft_wrap=True, quiet=_SILENT)
err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=_SILENT)
F = TypeVar("F", bound=Callable[..., Any])

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
        os.environ["SENTCLI_DEBUG"] = "1"


def config_options(values: dict[str, Any]) -> dict[str, Any]:
    """The config-dataclass settings among a command's parameters (call with `locals()`):
    those the user gave (not None), enum members as their values."""
    keys = {f.name for f in fields(ModelConfig)} | {f.name for f in fields(TrainConfig)}
    return {
        k: (v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v)
        for k, v in values.items()
        if k in keys and v is not None
    }


def debug_enabled() -> bool:
    return os.environ.get("SENTCLI_DEBUG", "") not in ("", "0")


def handle_errors(fn: F) -> F:
    """SentcliError → one line on stderr, exit 2 (1 for TrainingError); anything else →
    exit 1 (traceback only with --debug or SENTCLI_DEBUG=1); Ctrl-C outside training → 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SentcliError as e:
            if debug_enabled():
                raise
            err.print(f"[bold red]error:[/] {escape(str(e))}")
            raise typer.Exit(e.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`sentcli embed big.txt | head`): stop quietly, and point
            # stdout at /dev/null so the interpreter's final flush does not complain.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:
            if debug_enabled():
                raise
            err.print(
                f"[bold red]error:[/] unexpected {type(e).__name__}: {escape(str(e))} "
                "(rerun with --debug for the traceback, and please report it)"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
