"""Every option alias the commands share. Choices come from the enums in sentcli.config and
the `[default: …]` texts from the config dataclasses' defaults, so neither is written twice."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sentcli.config import (
    Balance,
    BestBy,
    Device,
    InferenceOptions,
    InferPrecision,
    LogTo,
    ModelConfig,
    Objective,
    Precision,
    Resume,
    ResumeMode,
    Schedule,
    SimilarityLoss,
    TrainConfig,
    TrainOptions,
)

TRAIN = "Training"
MODEL = "Model size"
MTL = "Multi-task"
SIMILARITY = "Similarity tasks"


def default(value: Any) -> str:
    """The `[default: …]` text of a help string (rich markup needs the escape)."""
    return f"\\[default: {value:g}]" if isinstance(value, float) else f"\\[default: {value}]"


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", exists=True, dir_okay=False, help="JSON or TOML file of options; flags win."
    ),
]
DeviceOpt = Annotated[
    Device | None, typer.Option(help=default(TrainConfig.device), rich_help_panel=TRAIN)
]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        help=f"Autocast dtype \\[default: {TrainConfig.precision}: bf16 where native]",
        rich_help_panel=TRAIN,
    ),
]
SeedOpt = Annotated[int | None, typer.Option(help=default(TrainConfig.seed), rich_help_panel=TRAIN)]
BatchOpt = Annotated[
    int | None, typer.Option(help=default(TrainConfig.batch_size), rich_help_panel=TRAIN)
]
BatchTokensOpt = Annotated[
    int | None,
    typer.Option(
        help="Fixed-shape batches of ≤ N tokens, texts padded to bucket lengths "
        "(8, 16, 32, … block size), for CUDA graphs; 0: --batch-size rows [default: 0]",
        rich_help_panel=TRAIN,
    ),
]
EpochsOpt = Annotated[
    int | None, typer.Option(help=default(TrainConfig.epochs), rich_help_panel=TRAIN)
]
MaxStepsOpt = Annotated[
    int | None, typer.Option(help="Stop after N steps (0: all epochs)", rich_help_panel=TRAIN)
]
MaxTimeOpt = Annotated[
    float | None,
    typer.Option(
        help="Stop after this many seconds; the LR schedule follows the clock (0: no limit)",
        rich_help_panel=TRAIN,
    ),
]
LrOpt = Annotated[
    float | None,
    typer.Option(help=f"Peak LR {default(TrainConfig.lr)}", rich_help_panel=TRAIN),
]
WarmupOpt = Annotated[
    int | None,
    typer.Option(help=f"Warmup steps {default(TrainConfig.warmup)}", rich_help_panel=TRAIN),
]
WdOpt = Annotated[
    float | None, typer.Option(help=default(TrainConfig.weight_decay), rich_help_panel=TRAIN)
]
ClipOpt = Annotated[
    float | None,
    typer.Option(help=default(TrainConfig.grad_clip), rich_help_panel=TRAIN),
]
EvalEveryOpt = Annotated[
    int | None, typer.Option(help="Evaluate every N steps (0: per epoch)", rich_help_panel=TRAIN)
]
LogEveryOpt = Annotated[
    int | None,
    typer.Option(
        help=f"Log train loss every N steps {default(TrainConfig.log_every)}",
        rich_help_panel=TRAIN,
    ),
]
SaveEveryOpt = Annotated[
    int | None,
    typer.Option(help="Also checkpoint every N steps (0: at evaluations)", rich_help_panel=TRAIN),
]
SkipNonfiniteOpt = Annotated[
    int | None,
    typer.Option(
        help="Skip up to N steps whose loss is NaN/inf (0: stop at the first)",
        rich_help_panel=TRAIN,
    ),
]
CompileOpt = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="torch.compile the step", rich_help_panel=TRAIN),
]
ValFracOpt = Annotated[
    float | None,
    typer.Option(
        help=f"Held-out share without a validation split {default(TrainConfig.val_fraction)}",
        rich_help_panel=TRAIN,
    ),
]
NLayerOpt = Annotated[
    int | None, typer.Option(help=default(ModelConfig.n_layer), rich_help_panel=MODEL)
]
NHeadOpt = Annotated[
    int | None, typer.Option(help=default(ModelConfig.n_head), rich_help_panel=MODEL)
]
NEmbdOpt = Annotated[
    int | None, typer.Option(help=default(ModelConfig.n_embd), rich_help_panel=MODEL)
]
BlockOpt = Annotated[
    int | None,
    typer.Option(
        help=f"Max tokens per text {default(ModelConfig.block_size)}", rich_help_panel=MODEL
    ),
]
DropoutOpt = Annotated[
    float | None, typer.Option(help=default(ModelConfig.dropout), rich_help_panel=MODEL)
]
AttnDropoutOpt = Annotated[
    float | None,
    typer.Option(
        help=f"On attention probabilities {default(ModelConfig.attn_dropout)}",
        rich_help_panel=MODEL,
    ),
]
EmbedStdOpt = Annotated[
    float | None,
    typer.Option(
        help="Token-embedding init std \\[default: 0.02; 1.0 for an encoder whose tasks are "
        "all similarity tasks]",
        rich_help_panel=MODEL,
    ),
]
OutputFileOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", dir_okay=False, help="File to write (default: stdout)."),
]
OutputDir = Annotated[
    Path, typer.Option("--output", "-o", file_okay=False, help="Run folder to write.")
]
TextColOpt = Annotated[
    str | None, typer.Option(help="Text column (default: text/sentence/review/content).")
]
ResumeOpt = Annotated[
    ResumeMode | None,
    typer.Option(
        "--resume",
        metavar="[auto]",
        help="Continue the run in --output. --resume auto: continue it if it has a "
        "checkpoint, else start it (for schedulers and torchrun --max-restarts).",
        show_default=False,
    ),
]


def resume_mode(value: ResumeMode | None) -> Resume:
    """The api's `resume` from the --resume option."""
    return "auto" if value == ResumeMode.auto else value is not None


OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing, non-empty --output.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]

# pretrain
ObjectiveOpt = Annotated[Objective | None, typer.Option(help=default(TrainConfig.objective))]
MaxEvalBatchesOpt = Annotated[
    int | None,
    typer.Option(help=f"Validation batches per evaluation {default(TrainConfig.max_eval_batches)}"),
]

# train-mtl
FreezeOpt = Annotated[
    str | None,
    typer.Option(
        help="none, backbone, embeddings, layers:K, head:NAME, all; comma-separated "
        + default(TrainConfig.freeze),
        rich_help_panel=MTL,
    ),
]
UnfreezeEveryOpt = Annotated[
    int | None,
    typer.Option(help="Unfreeze one more block every N epochs.", rich_help_panel=MTL),
]
BackboneLrOpt = Annotated[
    float | None, typer.Option(help="Encoder LR as a share of the heads'.", rich_help_panel=MTL)
]
ScheduleOpt = Annotated[
    Schedule | None, typer.Option(help=default(TrainConfig.schedule), rich_help_panel=MTL)
]
TemperatureOpt = Annotated[
    float | None,
    typer.Option(
        help=f"Proportional: p ∝ size^(1/T) {default(TrainConfig.temperature)}",
        rich_help_panel=MTL,
    ),
]
TaskWeightOpt = Annotated[
    list[str] | None, typer.Option(help="NAME=W: weight of a task's loss.", rich_help_panel=MTL)
]
BalanceOpt = Annotated[
    Balance | None,
    typer.Option(
        help="downsample: cut tasks to the smallest; upsample: repeat smaller tasks "
        "within an epoch to the largest's batch count.",
        rich_help_panel=MTL,
    ),
]
MaxSamplesOpt = Annotated[
    int | None, typer.Option(help="Cut each task's train split to N rows.", rich_help_panel=MTL)
]
HeadHiddenOpt = Annotated[
    int | None, typer.Option(help="MLP heads of this width (0: linear).", rich_help_panel=MTL)
]
ExplodeOpt = Annotated[
    float | None,
    typer.Option(
        help=f"Warn above this gradient norm {default(TrainConfig.explode_threshold)}.",
        rich_help_panel=MTL,
    ),
]

# similarity tasks
SimilarityLossOpt = Annotated[
    SimilarityLoss | None,
    typer.Option(
        help=f"Scored pairs: CoSENT or cosine-MSE {default(TrainConfig.similarity_loss)}",
        rich_help_panel=SIMILARITY,
    ),
]
SimilarityScaleOpt = Annotated[
    float | None,
    typer.Option(
        help=f"Cosine scale of CoSENT and InfoNCE {default(TrainConfig.similarity_scale)}",
        rich_help_panel=SIMILARITY,
    ),
]

KeepBestOpt = Annotated[
    bool | None,
    typer.Option(
        "--keep-best/--no-keep-best",
        help="Keep the weights of the best evaluation by --best-by (best.safetensors); the "
        "test pass and later loads use them.",
        rich_help_panel=TRAIN,
    ),
]
BestByOpt = Annotated[
    BestBy | None,
    typer.Option(
        help="The best evaluation: val-loss (lowest mean of the tasks' validation losses) or "
        "metric (highest mean of each task's accuracy, Spearman, MRR or teacher cosine) "
        f"{default(TrainConfig.best_by)}",
        rich_help_panel=TRAIN,
        show_default=False,
    ),
]
LogToOpt = Annotated[
    LogTo | None,
    typer.Option(
        help="Also log the run's scalars to TensorBoard (RUN/tensorboard/; the tensorboard "
        "extra); metrics.jsonl is always written.",
        rich_help_panel=TRAIN,
        show_default=False,
    ),
]
MatryoshkaDimsOpt = Annotated[
    str | None,
    typer.Option(
        help="Similarity tasks: also train these prefix widths of the vector, descending "
        "(e.g. 384,256,128,64); `--dims N` then uses them. Default: the full vector only.",
        rich_help_panel=SIMILARITY,
        show_default=False,
    ),
]
MatryoshkaWeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="One loss weight per --matryoshka-dims width (default: 1 each).",
        rich_help_panel=SIMILARITY,
        show_default=False,
    ),
]


def number_list(value: str, flag: str, kind: type[int] | type[float]) -> list[Any]:
    """A comma-separated list of numbers of a flag ("384,256,64"), or a one-line error."""
    try:
        return [kind(v) for v in value.split(",")]
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise typer.BadParameter(
            f"{value!r}: give {noun} separated by commas", param_hint=flag
        ) from None


def matryoshka_options(opts: TrainOptions, dims: str | None, weights: str | None) -> None:
    """Put the Matryoshka flags, parsed, into a command's training options."""
    if dims is not None:
        opts["matryoshka_dims"] = number_list(dims, "--matryoshka-dims", int)
    if weights is not None:
        opts["matryoshka_weights"] = number_list(weights, "--matryoshka-weights", float)


TeacherOpt = Annotated[
    Path | None,
    typer.Option(
        file_okay=False,
        help="A run whose vectors plain-text tasks match (distillation) instead of SimCSE.",
        rich_help_panel=SIMILARITY,
    ),
]

# embed and predict
InputArg = Annotated[
    str,
    typer.Argument(
        metavar="INPUT",
        help="Text file (one text per line, .gz ok), - for stdin, or .csv/.tsv/.jsonl/.parquet.",
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        file_okay=False,
        help="Run folder (default: $SENTCLI_MODEL, else the model shipped with sentcli).",
    ),
]
TextColumnOpt = Annotated[
    str | None, typer.Option(help="Tables: the text column (default: text/sentence/review/…).")
]
IdColumnOpt = Annotated[
    str | None, typer.Option(help="Tables: a column whose value replaces the text in the output.")
]
BatchSizeOpt = Annotated[int, typer.Option(help="Texts per batch.")]
MaxLengthOpt = Annotated[
    int | None,
    typer.Option(help="Cut texts to N tokens (default: the model's block size); cuts are counted."),
]
InferPrecisionOpt = Annotated[
    InferPrecision,
    typer.Option(help="auto: bf16 where native; int8: dynamic quantisation (CPU)."),
]
DimsOpt = Annotated[
    int | None,
    typer.Option(
        help="Keep each vector's first N dimensions, re-normalised (a --matryoshka-dims "
        "width of the model; others work, with a warning).",
        show_default=False,
    ),
]
INFER_BATCH = InferenceOptions.batch_size
"""embed/predict's default --batch-size."""


def inference_options(
    text_column: str | None,
    id_column: str | None,
    batch_size: int,
    max_length: int | None,
    device: Device | None,
    precision: InferPrecision,
    dims: int | None = None,
) -> InferenceOptions:
    """embed's and predict's shared options; output without a file goes to stdout."""
    return InferenceOptions(
        dims=dims,
        text_column=text_column,
        id_column=id_column,
        batch_size=batch_size,
        max_length=max_length,
        device=device.value if device else Device.auto,
        precision=precision.value,
        stdout=sys.stdout.buffer,
    )


PairColumnsOpt = Annotated[
    str | None,
    typer.Option(
        help="A,B[,C]: a pair task's text columns (default: sentence1,sentence2; "
        "anchor,positive[,negative]; …).",
        rich_help_panel=SIMILARITY,
    ),
]
ScoreColumnOpt = Annotated[
    str | None,
    typer.Option(
        help="A scored pair task's score (default: score/similarity/label).",
        rich_help_panel=SIMILARITY,
    ),
]


def split_columns(spec: str | None) -> list[str] | None:
    """--pair-columns A,B[,C] → its names."""
    return [c.strip() for c in spec.split(",")] if spec else None
