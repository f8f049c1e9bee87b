"""What every command shares: the Typer app, the consoles, error handling and exit codes,
and turning a command's parameters into config options."""

import contextlib
import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from sentcli import __version__
from sentcli.config import ModelConfig, TrainConfig, TrainOptions
from sentcli.errors import SentcliError

# Under torchrun only rank 0 speaks (every rank runs the same command).
_SILENT = os.environ.get("RANK", "0") != "0"
out = Console(highlight=False, soft_wrap=True, quiet=_SILENT)
err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=_SILENT)
F = TypeVar("F", bound=Callable[..., Any])


# Click's error base class, from Typer's own exception (Typer ≥ 0.2x vendors its Click)
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def resume_args(args: list[str]) -> list[str]:
    """`--resume` is a flag with an optional value: `--resume` (continue the run) and
    `--resume auto` (continue it if there is one, else start it). Typer options take a
    value or none, never both, so the flag is rewritten to `--resume=yes` / `--resume=auto`
    before parsing."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return out + args[i:]
        if a == "--resume":
            auto = i + 1 < len(args) and args[i + 1] == "auto"
            out.append("--resume=auto" if auto else "--resume=yes")
            i += 2 if auto else 1
            continue
        out.append(a)
        i += 1
    return out


class SentcliGroup(TyperGroup):
    """The app's command group: usage errors (an unknown option, a bad value, a missing
    path) get the same one line as sentcli's own errors, not Typer's boxed panel."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None and any(p.name == "resume" for p in cmd.params):
            rest = resume_args(rest)
        return name, cmd, rest


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except _CLICK_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `sentcli` alone: the help, as usual
            raise
        ctx = getattr(e, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        text: str = e.format_message()  # type: ignore[attr-defined]
        message = " ".join(text.split()).removesuffix(".")  # one line, however Click wrapped it
        err.print(f"[bold red]error:[/] {escape(message)}{hint}")
        raise typer.Exit(2) from None


app = typer.Typer(
    name="sentcli",
    cls=SentcliGroup,
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


def config_options(values: dict[str, Any]) -> TrainOptions:
    """The config-dataclass settings among a command's parameters (call with `locals()`):
    those the user gave (not None), enum members as their values."""
    keys = {f.name for f in fields(ModelConfig)} | {f.name for f in fields(TrainConfig)}
    options = {
        k: (v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v)
        for k, v in values.items()
        if k in keys and v is not None
    }
    return cast(TrainOptions, options)  # the keys are the configs' fields, as TrainOptions


def debug_enabled() -> bool:
    return os.environ.get("SENTCLI_DEBUG", "") not in ("", "0")


_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def handle_errors(fn: F) -> F:
    """SentcliError → one line on stderr, exit 2 (1 for TrainingError); an OSError of the
    machine's state (disk full, read-only, no permission) → one line, exit 2; anything else
    → exit 1 (traceback only with --debug or SENTCLI_DEBUG=1); Ctrl-C outside training →
    130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SentcliError as e:
            if debug_enabled():
                raise
            err.print(f"[bold red]error:[/] {escape(str(e))}")
            raise typer.Exit(e.exit_code) from None
        except (typer.Exit, typer.Abort, _CLICK_ERROR):
            raise  # a BadParameter raised by a command is a usage error: one line, exit 2
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
            if isinstance(e, OSError) and e.errno in _USER_ERRNOS:
                # the machine's state, not a bug: a full disk, a read-only or forbidden path
                where = f"{e.filename}: " if e.filename else ""
                err.print(
                    f"[bold red]error:[/] {escape(where)}{escape(e.strerror or str(e)).lower()}"
                    " (check the path, its permissions and the free disk space)"
                )
                raise typer.Exit(2) from None
            err.print(
                f"[bold red]error:[/] unexpected {type(e).__name__}: {escape(str(e))} "
                "(rerun with --debug for the traceback, and please report it)"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
