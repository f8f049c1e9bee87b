"""`sentcli train-encoder`: a sentence encoder with a classification head on one task."""

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
    MatryoshkaDimsOpt,
    MatryoshkaWeightsOpt,
    MaxStepsOpt,
    MaxTimeOpt,
    NEmbdOpt,
    NHeadOpt,
    NLayerOpt,
    OutputDir,
    OverwriteOpt,
    PairColumnsOpt,
    PrecisionOpt,
    QuietOpt,
    ResumeOpt,
    SaveEveryOpt,
    ScoreColumnOpt,
    SeedOpt,
    SimilarityLossOpt,
    SimilarityScaleOpt,
    SkipNonfiniteOpt,
    TeacherOpt,
    TextColOpt,
    ValFracOpt,
    WarmupOpt,
    WdOpt,
    matryoshka_options,
    resume_mode,
    split_columns,
)
from sentcli.cli.render import (
    TrainView,
    classifier_eval_line,
    finish_training,
    print_test_results,
    progress,
)
from sentcli.config import ResumeMode


@app.command("train-encoder")
@handle_errors
def train_encoder_cli(
    output: OutputDir,
    task: Annotated[
        str | None, typer.Option(help="NAME=SOURCE: a file, a folder with train.*, or hf:NAME.")
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Pretrained run to start from."),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="tokenizer.json (training from scratch)."),
    ] = None,
    text_column: TextColOpt = None,
    label_column: Annotated[
        str | None, typer.Option(help="Label column (default: label/target/class/…).")
    ] = None,
    pair_columns: PairColumnsOpt = None,
    score_column: ScoreColumnOpt = None,
    similarity_loss: SimilarityLossOpt = None,
    similarity_scale: SimilarityScaleOpt = None,
    matryoshka_dims: MatryoshkaDimsOpt = None,
    matryoshka_weights: MatryoshkaWeightsOpt = None,
    teacher: TeacherOpt = None,
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
    """Train a sentence encoder on one task: a classification head on labelled texts, or
    the sentence vectors themselves on pairs (CoSENT on scored pairs such as STS-B, in-batch
    negatives on positive pairs) or on plain text (unsupervised SimCSE).

    Starts from a pretrained run (--init) or from scratch (--tokenizer). Prints validation
    scores per evaluation, then test accuracy, macro-F1 and the confusion matrix.

    Example: sentcli train-encoder --task topic=data/ag_news --init runs/lm -o runs/topic

    Example: sentcli train-encoder --task sts=data/stsb --init runs/minilm --lr 2e-5 -o runs/sts
    """
    from sentcli import api  # imported here: --help stays free of torch

    if task is None and resume != ResumeMode.yes:
        raise typer.BadParameter("give --task NAME=SOURCE", param_hint="--task")
    opts = config_options(locals())
    matryoshka_options(opts, matryoshka_dims, matryoshka_weights)
    with progress(quiet) as bar:
        result = api.train_encoder(
            task, output, init, tokenizer, opts, config, text_column, label_column,
            resume_mode(resume), overwrite, on_event=TrainView(bar, classifier_eval_line),
            pair_columns=split_columns(pair_columns),
            score_column=score_column,
        )  # fmt: skip
    finish_training(result, quiet)
    print_test_results(result.test, result.test_splits)
    out.print(f"wrote {output}")
