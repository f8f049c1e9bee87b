"""`sentcli pretrain`: train the transformer by next-token prediction (or masked-LM)."""

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from sentcli import api
from sentcli.cli import app
from sentcli.cli._util import (
    AttnDropoutOpt,
    BatchOpt,
    BlockOpt,
    ClipOpt,
    CompileOpt,
    ConfigOpt,
    DeviceOpt,
    DropoutOpt,
    EpochsOpt,
    EvalEveryOpt,
    LogEveryOpt,
    LrOpt,
    MaxStepsOpt,
    MaxTimeOpt,
    NEmbdOpt,
    NHeadOpt,
    NLayerOpt,
    OutputDir,
    OverwriteOpt,
    PrecisionOpt,
    QuietOpt,
    ResumeOpt,
    SaveEveryOpt,
    SeedOpt,
    SkipNonfiniteOpt,
    TextColOpt,
    TrainView,
    ValFracOpt,
    WarmupOpt,
    WdOpt,
    config_options,
    handle_errors,
    human,
    out,
    progress,
    throughput_line,
)


class Objective(StrEnum):
    clm = "clm"
    mlm = "mlm"


def _eval_line(event: Any, train_loss: float | None) -> str:
    m = event.metrics
    train = ""
    if train_loss is not None:
        train = f"train loss {train_loss:.4f} ppl {math.exp(min(train_loss, 50.0)):.1f} | "
    return f"step {event.step:>6} | {train}val loss {m['val_loss']:.4f} ppl {m['val_ppl']:.1f}"


@app.command("pretrain")
@handle_errors
def pretrain_cli(
    data: Annotated[list[str], typer.Argument(help="Files, folders or hf:NAME with texts.")],
    output: OutputDir,
    tokenizer: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="tokenizer.json to use.")
    ] = None,
    objective: Annotated[Objective | None, typer.Option(help="\\[default: clm]")] = None,
    max_eval_batches: Annotated[
        int | None, typer.Option(help="Validation batches per evaluation \\[default: 50]")
    ] = None,
    text_column: TextColOpt = None,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    epochs: EpochsOpt = None,
    max_steps: MaxStepsOpt = None,
    max_time: MaxTimeOpt = None,
    lr: LrOpt = None,
    warmup: WarmupOpt = None,
    weight_decay: WdOpt = None,
    grad_clip: ClipOpt = None,
    eval_every: EvalEveryOpt = None,
    log_every: LogEveryOpt = None,
    save_every: SaveEveryOpt = None,
    skip_nonfinite: SkipNonfiniteOpt = None,
    compile: CompileOpt = None,
    val_fraction: ValFracOpt = None,
    n_layer: NLayerOpt = None,
    n_head: NHeadOpt = None,
    n_embd: NEmbdOpt = None,
    block_size: BlockOpt = None,
    dropout: DropoutOpt = None,
    attn_dropout: AttnDropoutOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain the transformer on unlabelled text by next-token prediction.

    Texts are packed into blocks of --block-size tokens; --objective mlm trains a masked
    language model instead. Checkpoints go to the run folder at every evaluation.

    Example: sentcli pretrain data/imdb_unsup --tokenizer tok.json --max-steps 500 -o runs/lm
    """
    opts = config_options(locals())
    with progress(quiet) as bar:
        result = api.pretrain(
            data, output, tokenizer, opts, config, text_column, resume, overwrite,
            on_event=TrainView(bar, _eval_line),
        )  # fmt: skip
    if result.interrupted:
        raise typer.Exit(128 + result.interrupted)  # 130 Ctrl-C, 143 SIGTERM
    throughput_line(result, quiet)
    last = result.history[-1] if result.history else {}
    out.print(
        f"done: {result.steps:,} steps, {human(result.tokens_seen)} tokens seen, "
        f"val loss {last.get('val_loss', float('nan')):.4f}, "
        f"val ppl {last.get('val_ppl', float('nan')):.1f}; wrote {output}"
    )
