"""`sentcli train-mtl`: one shared encoder, one head per task, freeze modes and schedules."""

from pathlib import Path
from typing import Annotated

import typer

from sentcli.cli._util import app, config_options, handle_errors, out
from sentcli.cli.options import (
    SIMILARITY,
    AttnDropoutOpt,
    BackboneLrOpt,
    BalanceOpt,
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
    ExplodeOpt,
    FreezeOpt,
    HeadHiddenOpt,
    KeepBestOpt,
    LogEveryOpt,
    LogToOpt,
    LrOpt,
    MatryoshkaDimsOpt,
    MatryoshkaWeightsOpt,
    MaxSamplesOpt,
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
    ScheduleOpt,
    SeedOpt,
    SimilarityLossOpt,
    SimilarityScaleOpt,
    SkipNonfiniteOpt,
    TaskWeightOpt,
    TeacherOpt,
    TemperatureOpt,
    UnfreezeEveryOpt,
    ValFracOpt,
    WarmupOpt,
    WdOpt,
    matryoshka_options,
    resume_mode,
)
from sentcli.cli.render import (
    TrainView,
    classifier_eval_line,
    finish_training,
    grad_table,
    loss_table,
    print_test_results,
    progress,
)
from sentcli.config import TaskConfig
from sentcli.errors import ConfigError


def _per_task(values: list[str], tasks: list[str], what: str) -> dict[str, str]:
    """`COL` (every task) or `NAME=COL` (one task) → {task: column}."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, col = value.partition("=")
        if not sep:
            out |= dict.fromkeys(tasks, value)
        elif name in tasks:
            out[name] = col
        else:
            raise ConfigError(f"--{what} {value}: no task {name!r}; tasks: {', '.join(tasks)}")
    return out


def _columns(value: str | None) -> list[str]:
    return [c.strip() for c in value.split(",")] if value else []


def _weights(values: list[str]) -> dict[str, float] | None:
    weights = {}
    for value in values:
        name, _, w = value.partition("=")
        try:
            weights[name] = float(w)
        except ValueError:
            raise ConfigError(
                f"--task-weight {value!r} is not NAME=W (e.g. sentiment=0.5)"
            ) from None
    return weights or None


@app.command("train-mtl")
@handle_errors
def train_mtl_cli(
    output: OutputDir,
    task: Annotated[
        list[str] | None, typer.Option(help="NAME=SOURCE, once per task (file, folder, hf:NAME).")
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="LM, encoder or multi-task run to start from."
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="tokenizer.json (training from scratch)."),
    ] = None,
    freeze: FreezeOpt = None,
    unfreeze_every: UnfreezeEveryOpt = None,
    backbone_lr_scale: BackboneLrOpt = None,
    schedule: ScheduleOpt = None,
    temperature: TemperatureOpt = None,
    task_weight: TaskWeightOpt = None,
    balance: BalanceOpt = None,
    max_samples_per_task: MaxSamplesOpt = None,
    head_hidden: HeadHiddenOpt = None,
    explode_threshold: ExplodeOpt = None,
    text_column: Annotated[list[str] | None, typer.Option(help="COL or NAME=COL.")] = None,
    label_column: Annotated[list[str] | None, typer.Option(help="COL or NAME=COL.")] = None,
    pair_columns: Annotated[
        list[str] | None,
        typer.Option(
            help="A,B[,C] or NAME=A,B[,C]: a pair task's text columns (anchor, positive, "
            "negative).",
            rich_help_panel=SIMILARITY,
        ),
    ] = None,
    score_column: Annotated[
        list[str] | None,
        typer.Option(
            help="COL or NAME=COL: a scored pair task's score.", rich_help_panel=SIMILARITY
        ),
    ] = None,
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
    """Train one shared encoder with one head per task, with a freeze mode and task schedule.

    A task whose source holds sentence pairs (two text columns, with or without a score) or
    plain text trains the sentence vectors directly, with no head: CoSENT on scored pairs,
    in-batch negatives on positive pairs and triplets, SimCSE on plain text.

    Prints the parameter groups (trainable or frozen), a line per evaluation (epoch 0 is
    before training), then the per-task loss table, one confusion matrix per task and the
    gradient norms per group.

    Example: sentcli train-mtl --task topic=data/ag_news --task sentiment=data/imdb
    --init runs/lm --freeze backbone -o runs/mtl
    """
    from sentcli import api  # imported here: --help stays free of torch

    opts = config_options(locals())
    matryoshka_options(opts, matryoshka_dims, matryoshka_weights)
    weights = _weights(task_weight or [])
    if weights is not None:  # None: not given (a resumed run keeps its own)
        opts["task_weights"] = weights
    pairs = [api.parse_task_spec(t) for t in task or []]
    if not pairs and not resume:
        raise typer.BadParameter("give --task NAME=SOURCE once per task", param_hint="--task")
    names = [n for n, _ in pairs]
    texts = _per_task(text_column or [], names, "text-column")
    labels = _per_task(label_column or [], names, "label-column")
    pair_cols = _per_task(pair_columns or [], names, "pair-columns")
    scores = _per_task(score_column or [], names, "score-column")
    specs = [
        TaskConfig(
            n, s, texts.get(n), labels.get(n), pair_columns=_columns(pair_cols.get(n)),
            score_column=scores.get(n),
        )
        for n, s in pairs
    ]  # fmt: skip
    with progress(quiet) as bar:
        result = api.train_mtl(
            specs, output, init, tokenizer, opts, config, resume_mode(resume), overwrite,
            on_event=TrainView(bar, classifier_eval_line),
        )  # fmt: skip
    finish_training(result, quiet)
    out.print(loss_table(result.history, [t.name for t in result.config.tasks]))
    print_test_results(result.test, result.test_splits)
    if result.grad_norms:
        out.print(grad_table(result.grad_norms))
    out.print(f"wrote {output}")
