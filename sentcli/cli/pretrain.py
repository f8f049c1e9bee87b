"""`sentcli pretrain`: train the transformer by next-token prediction (or masked-LM)."""

from pathlib import Path
from typing import Annotated

import typer

from sentcli.cli._util import app, config_options, handle_errors, out
from sentcli.cli.options import (
    AttnDropoutOpt,
    BatchOpt,
    BatchTokensOpt,
    BestByOpt,
    BlockOpt,
    ClipOpt,
    CompileOpt,
    ConfigOpt,
    DeviceOpt,
    DropoutOpt,
    EmbedStdOpt,
    EpochsOpt,
    EvalEveryOpt,
    KeepBestOpt,
    LogEveryOpt,
    LogToOpt,
    LrOpt,
    MaxEvalBatchesOpt,
    MaxStepsOpt,
    MaxTimeOpt,
    NEmbdOpt,
    NHeadOpt,
    NLayerOpt,
    ObjectiveOpt,
    OutputDir,
    OverwriteOpt,
    PrecisionOpt,
    QuietOpt,
    ResumeOpt,
    SaveEveryOpt,
    SeedOpt,
    SkipNonfiniteOpt,
    TextColOpt,
    ValFracOpt,
    WarmupOpt,
    WdOpt,
    resume_mode,
)
from sentcli.cli.render import TrainView, finish_training, human, lm_eval_line, progress


@app.command("pretrain")
@handle_errors
def pretrain_cli(
    data: Annotated[list[str], typer.Argument(help="Files, folders or hf:NAME with texts.")],
    output: OutputDir,
    tokenizer: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="tokenizer.json to use.")
    ] = None,
    objective: ObjectiveOpt = None,
    max_eval_batches: MaxEvalBatchesOpt = None,
    text_column: TextColOpt = None,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    batch_tokens: BatchTokensOpt = None,
    epochs: EpochsOpt = None,
    max_steps: MaxStepsOpt = None,
    max_time: MaxTimeOpt = None,
    log_to: LogToOpt = None,
    keep_best: KeepBestOpt = None,
    best_by: BestByOpt = None,
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
    embed_std: EmbedStdOpt = None,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain the transformer on unlabelled text by next-token prediction.

    Texts are packed into blocks of --block-size tokens; --objective mlm trains a masked
    language model instead. Checkpoints go to the run folder at every evaluation.

    Example: sentcli pretrain data/imdb_unsup --tokenizer tok.json --max-steps 500 -o runs/lm
    """
    from sentcli import api  # imported here: --help stays free of torch

    opts = config_options(locals())
    with progress(quiet) as bar:
        result = api.pretrain(
            data, output, tokenizer, opts, config, text_column, resume_mode(resume), overwrite,
            on_event=TrainView(bar, lm_eval_line),
        )  # fmt: skip
    finish_training(result, quiet)
    last = result.history[-1] if result.history else {}
    out.print(
        f"done: {result.steps:,} steps, {human(result.tokens_seen)} tokens seen, "
        f"val loss {last.get('val_loss', float('nan')):.4f}, "
        f"val ppl {last.get('val_ppl', float('nan')):.1f}; wrote {output}"
    )
