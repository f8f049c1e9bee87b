"""Configuration: the choice enums (each set of choices defined once, used by the dataclasses
and the CLI), the config dataclasses with their validation and JSON round trip, and the
merging of defaults, a config file, flags and a resumed run's settings (stdlib only)."""

from __future__ import annotations

import importlib.util
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Literal, TypedDict

from sentcli import __version__
from sentcli.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(StrEnum):
    """Training and inference autocast dtype; auto: bf16 where the hardware has it."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class InferPrecision(StrEnum):
    """Precision for embed/predict: the training ones and int8 (dynamic quantisation, CPU)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    int8 = "int8"


class Objective(StrEnum):
    clm = "clm"
    mlm = "mlm"


class Schedule(StrEnum):
    round_robin = "round-robin"
    proportional = "proportional"
    joint = "joint"


class Balance(StrEnum):
    none = "none"
    downsample = "downsample"
    upsample = "upsample"


class RunKind(StrEnum):
    lm = "lm"
    encoder = "encoder"
    mtl = "mtl"


class TaskKind(StrEnum):
    """What a task's source holds, and so what it trains (see data/pairs.py)."""

    classification = "classification"
    """A text and a label: a classification head."""
    scored = "scored"
    """Two texts and a numeric score (STS): CoSENT or cosine-MSE on the sentence vectors."""
    pairs = "pairs"
    """Anchor and positive (and a hard negative): in-batch negatives (InfoNCE)."""
    text = "text"
    """Plain text: unsupervised SimCSE (the same text twice, two dropout masks)."""
    distill = "distill"
    """Plain text with --teacher: the vectors match the teacher run's (MSE, normalised)."""


class SimilarityLoss(StrEnum):
    cosent = "cosent"
    cosine_mse = "cosine-mse"


class LabelFormat(StrEnum):
    """predict's output: label<TAB>probability rows, or one JSON object per row."""

    tsv = "tsv"
    jsonl = "jsonl"


class MatrixFormat(StrEnum):
    """similarity --matrix: a table for a terminal, or every value as TSV rows or JSON."""

    table = "table"
    tsv = "tsv"
    json = "json"


class TokenizerKind(StrEnum):
    bpe = "bpe"
    wordpiece = "wordpiece"
    unigram = "unigram"


class Activation(StrEnum):
    gelu_tanh = "gelu_tanh"
    gelu = "gelu"


class Norm(StrEnum):
    pre = "pre"
    post = "post"


class Pooling(StrEnum):
    mean = "mean"
    cls = "cls"
    max = "max"


class ExportFormat(StrEnum):
    onnx = "onnx"
    sentence_transformers = "sentence-transformers"


class Quantize(StrEnum):
    int8 = "int8"


class VectorCode(StrEnum):
    """embed --quantize: int8 codes (calibrated ranges) or 1-bit signs."""

    int8 = "int8"
    binary = "binary"


class IndexDtype(StrEnum):
    """index build --dtype: how the graph stores the vectors."""

    f16 = "f16"
    i8 = "i8"
    b1 = "b1"


class BestBy(StrEnum):
    """--best-by: the rule that picks the best evaluation (--keep-best, losses.png)."""

    val_loss = "val-loss"
    metric = "metric"


class LogTo(StrEnum):
    """--log-to: a tracker that also gets the run's scalars."""

    tensorboard = "tensorboard"


class ResumeMode(StrEnum):
    """`--resume` (yes: continue the run) and `--resume auto` (continue it if it has a
    checkpoint, else start it)."""

    yes = "yes"
    auto = "auto"


Resume = bool | Literal["auto"]
"""What the training functions take for `resume`: True, False or "auto"."""


def choices(enum: type[StrEnum]) -> str:
    """The values of a choice set, comma-separated, for messages."""
    return ", ".join(m.value for m in enum)


def _coerce(obj: object, name: str, enum: type[StrEnum], problems: list[str]) -> None:
    """Turn a field's plain string (from JSON, TOML or Python) into its enum member."""
    value = getattr(obj, name)
    try:
        setattr(obj, name, enum(value))
    except ValueError:
        problems.append(f"{name} must be one of {choices(enum)} (got {value!r})")


NUMBERS = {"int": (int,), "float": (int, float), "int | None": (int,), "float | None": (int, float)}


def _check_numbers(obj: object, what: str) -> None:
    """Every int/float field holds a number of its type and a finite one (a config file's
    "64" or 1e999, a flag's nan), before any range check compares it."""
    problems = []
    for f in fields(obj):  # type: ignore[arg-type]
        kinds, value = NUMBERS.get(str(f.type)), getattr(obj, f.name)
        if kinds is None or (value is None and "None" in str(f.type)):
            continue
        if isinstance(value, bool) or not isinstance(value, kinds):
            problems.append(f"{f.name} must be {'an integer' if kinds == (int,) else 'a number'}")
            problems[-1] += f" (got {value!r})"
        elif not math.isfinite(value):
            problems.append(f"{f.name} must be a finite number (got {value})")
    _raise_if(problems, what)


def matryoshka_problems(dims: list[int], weights: list[float]) -> list[str]:
    """What is wrong with a list of Matryoshka widths and their weights (nothing: [])."""
    problems = []
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        problems.append(f"matryoshka_dims must be positive integers (got {dims})")
    elif any(a <= b for a, b in zip(dims, dims[1:], strict=False)):
        problems.append(f"matryoshka_dims must be strictly descending (got {dims})")
    if weights and len(weights) != len(dims):
        problems.append(
            f"matryoshka_weights needs one weight per width ({len(dims)}; got {len(weights)})"
        )
    bad = [w for w in weights if isinstance(w, bool) or not isinstance(w, int | float)]
    if bad or not all(math.isfinite(w) and w > 0 for w in weights):
        problems.append(f"matryoshka_weights must be positive numbers (got {weights})")
    return problems


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise ConfigError(f"invalid {what}: " + "; ".join(problems))


@dataclass
class ModelConfig:
    """The transformer trunk (nanoGPT field names)."""

    vocab_size: int = 8000
    block_size: int = 128
    """Longest input in tokens (position embeddings); longer texts are truncated."""
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1
    attn_dropout: float = 0.0
    """Dropout on the attention probabilities. Off by default: on a CPU it forces SDPA's
    unfused math kernel and draws T² random numbers per head (IMDB, 256 tokens: 17–35 %
    slower steps; README, measured figures). `dropout` still applies to the embeddings and
    both residual branches."""
    bias: bool = True
    causal: bool = True
    """Causal attention (next-token pretraining) or bidirectional (masked-LM, encoders)."""
    head_hidden: int = 0
    """Hidden width of the task heads' MLP; 0 means a linear head."""
    activation: Activation = Activation.gelu_tanh
    """The MLP's GELU: gelu_tanh (GPT-2's approximation) or gelu (exact, erf; BERT's, and
    the faster one on CPUs)."""
    # What imported BERT-family checkpoints need (sentcli's own models keep the defaults):
    norm: Norm = Norm.pre
    """pre: x + f(LN(x)), then a final LayerNorm (GPT-2); post: LN(x + f(x)) (BERT)."""
    embed_norm: bool = False
    """A LayerNorm after the token + position embeddings (BERT)."""
    norm_eps: float = 1e-5
    n_inner: int = 0
    """The MLP's hidden width; 0 means 4 * n_embd."""
    pooling: Pooling = Pooling.mean
    """The sentence vector: mean of the real tokens (masked), the first token (cls) or the
    masked maximum (max)."""
    embed_std: float | None = None
    """The standard deviation of the token embeddings at initialisation. None: 1.0 for an
    encoder whose tasks are all similarity tasks, so that token identity dominates the
    residual stream at the start and a mean-pooled vector begins as a bag of random word
    vectors (STS-B validation 62 at initialisation, against 36 with 0.02); else GPT-2's
    0.02 (a language model's output projection is tied to them, and classification heads
    learned faster from it: AG News 0.74 against 0.65 after one epoch). Only a fresh model
    reads it; the value used is recorded in config.json."""

    def __post_init__(self) -> None:
        _check_numbers(self, "model options")
        problems = [
            f"{name} must be at least 1 (got {getattr(self, name)})"
            for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
            if getattr(self, name) < 1
        ]
        if self.n_head >= 1 and self.n_embd % self.n_head:
            problems.append(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1) (got {getattr(self, name)})")
        if self.head_hidden < 0:
            problems.append(f"head_hidden must be 0 or more (got {self.head_hidden})")
        for name, enum in (("norm", Norm), ("pooling", Pooling)):
            _coerce(self, name, enum, problems)
        if self.n_inner < 0 or not self.norm_eps > 0:
            problems.append("n_inner must be 0 or more and norm_eps above 0")
        _coerce(self, "activation", Activation, problems)
        if self.embed_std is not None and not self.embed_std > 0:
            problems.append(f"embed_std must be above 0 (got {self.embed_std})")
        _raise_if(problems, "model options")


@dataclass
class TrainConfig:
    """One training run: optimisation, schedule, device and evaluation."""

    epochs: int = 1
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 means run all epochs."""
    batch_size: int = 32
    batch_tokens: int = 0
    """Fixed-shape batches of at most this many tokens (texts padded to a few bucket lengths,
    so CUDA graphs can capture each shape); 0: --batch-size rows, padded to their longest."""
    lr: float = 1e-3
    warmup: int = 100
    """Linear warmup steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping."""
    seed: int = 1337
    device: Device = Device.auto
    precision: Precision = Precision.auto
    eval_every: int = 0
    """Evaluate every N steps; 0 means once per epoch (and always at the end)."""
    log_every: int = 10
    save_every: int = 0
    """Also save a resumable checkpoint every N steps; 0: only at evaluations and at the end."""
    val_fraction: float = 0.1
    """Share of train held out for validation when a source has no validation split."""
    max_eval_batches: int = 50
    objective: Objective = Objective.clm
    """Pretraining objective: next-token prediction (clm) or masked language modelling."""
    mlm_probability: float = 0.15
    freeze: str = "none"
    """Multi-task freeze modes, comma-separated (checked against the tasks by freeze.py)."""
    unfreeze_every: int = 0
    """Give one more frozen block back, from the top, every N epochs; 0 never."""
    backbone_lr_scale: float = 1.0
    """The trunk's learning rate as a share of the heads'."""
    schedule: Schedule = Schedule.round_robin
    temperature: float = 1.0
    """Proportional schedule: tasks drawn with probability ∝ size^(1/temperature)."""
    task_weights: dict[str, float] = field(default_factory=dict)
    balance: Balance = Balance.none
    max_samples_per_task: int = 0
    """Cut every task's train split to at most N rows (seeded); 0 keeps all."""
    similarity_loss: SimilarityLoss = SimilarityLoss.cosent
    """Scored-pair tasks: CoSENT (ranks pairs by score; any scale) or cosine-MSE (the cosine
    regresses onto the score mapped to 0..1 by the train split's range)."""
    similarity_scale: float = 20.0
    """The scale of cosines in CoSENT and in-batch-negative (InfoNCE) losses (1/temperature)."""
    matryoshka_dims: list[int] = field(default_factory=list)
    """Similarity tasks: also train each prefix of the vector (descending widths, the first
    at most the model's): the task's loss on each prefix, re-normalised, summed with
    `matryoshka_weights`. Empty: the full vector only."""
    matryoshka_weights: list[float] = field(default_factory=list)
    """One weight per Matryoshka width (empty: 1 each)."""
    teacher: str | None = None
    """A run whose sentence vectors plain-text tasks learn to match (distillation) instead
    of SimCSE; its vectors are cached per corpus ($SENTCLI_CACHE, else ~/.cache/sentcli)."""
    explode_threshold: float = 1e3
    """A gradient-norm warning above this (and for non-finite norms)."""
    skip_nonfinite: int = 0
    """Skip up to N steps whose loss is NaN/inf (no update, decided on the device) before
    stopping; 0 stops at the first. Bad steps are reported at the next log, eval or save."""
    compile: bool = False
    """torch.compile the training step (worth it on GPUs; compiling takes a while)."""
    keep_best: bool = False
    """Keep the weights of the best evaluation by `best_by` (best.safetensors); the test
    pass and every later load use them."""
    best_by: BestBy = BestBy.val_loss
    """The best evaluation: "val-loss", the lowest mean of the tasks' validation losses;
    "metric", the highest mean of each task's headline metric (accuracy, Spearman, MRR or
    the cosine to a teacher)."""
    log_to: str = ""
    """Also log to this tracker ("tensorboard": RUN/tensorboard/); "": metrics.jsonl only."""
    max_time: float = 0.0
    """Stop after this many seconds of training (the LR schedule follows the clock); 0: no
    limit. Evaluations count; a resumed run continues the clock."""

    def __post_init__(self) -> None:
        _check_numbers(self, "training options")
        problems = [
            f"{name} must be at least 1 (got {getattr(self, name)})"
            for name in ("epochs", "batch_size", "log_every", "max_eval_batches")
            if getattr(self, name) < 1
        ]
        problems += [
            f"{name} must be 0 or more (got {getattr(self, name)})"
            for name in (
                "max_steps",
                "warmup",
                "weight_decay",
                "grad_clip",
                "eval_every",
                "save_every",
                "unfreeze_every",
                "max_samples_per_task",
                "batch_tokens",
                "skip_nonfinite",
                "max_time",
                "seed",
            )
            if getattr(self, name) < 0
        ]
        if not self.lr > 0:
            problems.append(f"lr must be positive (got {self.lr})")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            problems.append(f"min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in (0, 1) (got {self.val_fraction})")
        if not 0.0 < self.backbone_lr_scale <= 1.0:
            problems.append(f"backbone_lr_scale must be in (0, 1] (got {self.backbone_lr_scale})")
        if not self.similarity_scale > 0:
            problems.append(f"similarity_scale must be positive (got {self.similarity_scale})")
        problems += matryoshka_problems(self.matryoshka_dims, self.matryoshka_weights)
        if self.log_to not in ("", "tensorboard"):
            problems.append(f"log_to must be tensorboard or empty (got {self.log_to!r})")
        elif self.log_to and importlib.util.find_spec("tensorboard") is None:
            problems.append(
                "log_to tensorboard needs the tensorboard package: "
                "pip install 'sentcli[tensorboard]'"
            )
        if not self.temperature > 0:
            problems.append(f"temperature must be positive (got {self.temperature})")
        problems += [
            f"task weight {k}={w} must be positive" for k, w in self.task_weights.items() if w <= 0
        ]
        if not 0.0 < self.mlm_probability < 1.0:
            problems.append(f"mlm_probability must be in (0, 1) (got {self.mlm_probability})")
        for name, enum in (
            ("device", Device),
            ("precision", Precision),
            ("objective", Objective),
            ("schedule", Schedule),
            ("balance", Balance),
            ("similarity_loss", SimilarityLoss),
            ("best_by", BestBy),
        ):
            _coerce(self, name, enum, problems)
        _raise_if(problems, "training options")


class TrainOptions(TypedDict, total=False):
    """The options a training command takes from Python (`api.pretrain(..., options=...)`):
    ModelConfig's and TrainConfig's fields, each optional (mypy catches a misspelt key; a
    test keeps the two in step). Enum fields take their values as strings."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float
    attn_dropout: float
    bias: bool
    causal: bool
    head_hidden: int
    activation: str
    norm: str
    embed_norm: bool
    norm_eps: float
    n_inner: int
    pooling: str
    embed_std: float | None
    epochs: int
    max_steps: int
    batch_size: int
    batch_tokens: int
    lr: float
    warmup: int
    min_lr_ratio: float
    weight_decay: float
    grad_clip: float
    seed: int
    device: str
    precision: str
    eval_every: int
    log_every: int
    save_every: int
    val_fraction: float
    max_eval_batches: int
    objective: str
    mlm_probability: float
    freeze: str
    unfreeze_every: int
    backbone_lr_scale: float
    schedule: str
    temperature: float
    task_weights: dict[str, float]
    balance: str
    max_samples_per_task: int
    similarity_loss: str
    similarity_scale: float
    matryoshka_dims: list[int]
    matryoshka_weights: list[float]
    teacher: str | None
    explode_threshold: float
    skip_nonfinite: int
    compile: bool
    keep_best: bool
    best_by: str
    log_to: str
    max_time: float


MAX_TASK_NAME = 64


def check_task_name(name: str) -> None:
    """A task's name names its head, its table rows and its files (confusion_NAME.png): a
    word of letters, digits, '-' and '_', at most MAX_TASK_NAME characters."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"task name {name!r} must be letters, digits, '-' or '_'")
    if len(name) > MAX_TASK_NAME:
        raise ConfigError(
            f"task name {name[:20]}… is {len(name)} characters long; use at most {MAX_TASK_NAME}"
        )


@dataclass
class TaskConfig:
    """One task: where its data comes from, what it holds and (classification) its label
    names. `kind` None: found from the source's columns (data/pairs.py)."""

    name: str
    source: str
    text_column: str | None = None
    label_column: str | None = None
    label_names: list[str] = field(default_factory=list)
    kind: TaskKind | None = None
    pair_columns: list[str] = field(default_factory=list)
    """Pair tasks: the text columns (anchor/first, positive/second[, negative])."""
    score_column: str | None = None
    score_range: list[float] = field(default_factory=list)
    """Scored pairs: the train split's lowest and highest score (for cosine-MSE)."""
    teacher_dim: int = 0
    """Distillation: the teacher's vector width (a learned projection when it differs)."""

    def __post_init__(self) -> None:
        check_task_name(self.name)
        if self.kind is not None:
            problems: list[str] = []
            _coerce(self, "kind", TaskKind, problems)
            _raise_if(problems, f"task {self.name}")


@dataclass
class RunConfig:
    """Everything `config.json` in a run folder holds."""

    kind: RunKind
    model: ModelConfig
    train: TrainConfig
    tasks: list[TaskConfig] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    """Pretraining sources (kind lm)."""
    init: str | None = None
    """The run this one started from, if any."""
    imported: dict[str, Any] | None = None
    """import-hf runs: the checkpoint folder, its architecture, what was mapped."""
    format_version: int = FORMAT_VERSION
    sentcli_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Rebuild from `to_dict()` output; refuses unknown formats and keys."""
        version = d.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError("config.json has no format_version: not a sentcli run")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"run format version {version} is newer than this sentcli understands "
                f"({FORMAT_VERSION}); upgrade sentcli (pip install -U sentcli)"
            )
        if not isinstance(d.get("kind"), str) or d["kind"] not in {k.value for k in RunKind}:
            raise CheckpointError(f"config.json has an unknown kind {d.get('kind')!r}")
        try:
            return cls(
                kind=RunKind(d["kind"]),
                # Runs written before attn_dropout existed used `dropout` there too.
                model=ModelConfig(**{"attn_dropout": d["model"].get("dropout", 0.0), **d["model"]}),
                train=TrainConfig(**d["train"]),
                tasks=[TaskConfig(**t) for t in d.get("tasks", [])],
                data=list(d.get("data", [])),
                init=d.get("init"),
                imported=d.get("imported"),
                format_version=version,
                sentcli_version=d.get("sentcli_version", "unknown"),
            )
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"config.json does not match this sentcli version: {e}") from e


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or TOML options file into a flat dict of option names (dashes allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}; use JSON or TOML") from e
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold an object of option names to values")
    return {k.replace("-", "_"): v for k, v in values.items()}


def build_configs(
    file_values: Mapping[str, Any],
    overrides: Mapping[str, Any],
    base_model: ModelConfig | None = None,
) -> tuple[ModelConfig, TrainConfig]:
    """Defaults (or `base_model`) < the config file < command-line flags given (not None)."""
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    model_keys = {f.name for f in fields(ModelConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - model_keys - train_keys)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(model_keys | train_keys))}"
        )
    model_values = asdict(base_model) if base_model else {}
    model_values.update({k: v for k, v in values.items() if k in model_keys})
    try:
        model = ModelConfig(**model_values)
        train = TrainConfig(**{k: v for k, v in values.items() if k in train_keys})
    except TypeError as e:
        raise ConfigError(f"invalid option: {e}") from e
    return model, train


STRUCTURAL = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "activation")
"""Model settings an --init run fixes (its weights have their shapes)."""


def merge_configs(
    options: Mapping[str, Any], config_file: Path | None, base: ModelConfig | None
) -> tuple[ModelConfig, TrainConfig, set[str]]:
    """Model and train configs from defaults (or `base`, an --init run's model), the file and
    the flags; also the names the user set."""
    file_values = read_config_file(config_file) if config_file else {}
    given = {**file_values, **{k: v for k, v in options.items() if v is not None}}
    if base is not None:
        clash = [k for k in STRUCTURAL if k in given and given[k] != getattr(base, k)]
        if clash:
            raise ConfigError(
                f"{', '.join('--' + k.replace('_', '-') for k in clash)} conflicts with the "
                "--init run's model; drop it (the architecture comes from the --init run)"
            )
    return (*build_configs(file_values, options, base), set(given))


RUNTIME = ("device", "compile", "skip_nonfinite")
"""Settings a resumed run takes from the command line: where and how it runs, not what it
learns."""


def resumed_config(
    config: RunConfig, options: Mapping[str, Any] | None, config_file: Path | None
) -> tuple[RunConfig, list[str]]:
    """A resumed run's config with the RUNTIME flags given now, and the other settings given
    (flags or --config file) whose value differs from the run's (as --name=value), which a
    resumed run ignores: it keeps its own settings. The same command line again (as after
    Ctrl-C) ignores nothing."""
    file_values = read_config_file(config_file) if config_file else {}
    given = {**file_values, **{k: v for k, v in (options or {}).items() if v is not None}}
    runtime = {k: v for k, v in given.items() if k in RUNTIME}
    if runtime:
        config.train = TrainConfig(**{**asdict(config.train), **runtime})
    ignored = []
    for k, v in given.items():
        section = config.model if hasattr(config.model, k) else config.train
        if k not in RUNTIME and v != {} and not _same(getattr(section, k, None), v, k):
            ignored.append(f"--{k.replace('_', '-')}={v}")
    return config, ignored


def _same(saved: Any, given: Any, name: str) -> bool:
    """A flag's value against a saved one: enums as their strings, 2 == 2.0, a --teacher
    path by where it points (runs record it absolute)."""
    if isinstance(saved, StrEnum) or isinstance(given, StrEnum):
        return str(saved) == str(given)
    if name == "teacher" and saved is not None and given is not None:
        return Path(saved).resolve() == Path(given).resolve()
    return bool(saved == given)


@dataclass
class InferenceOptions:
    """How embed and predict read, batch and run their input (the same for both)."""

    text_column: str | None = None
    """Tables: the text column (default: the first of text, sentence, review, content)."""
    id_column: str | None = None
    """Tables: a column whose value stands for the text in the output."""
    batch_size: int = 128
    max_length: int | None = None
    """Cut texts to this many tokens; None: the model's block size."""
    device: str = Device.auto
    precision: str = InferPrecision.auto
    """An InferPrecision (checked by `run_inference`)."""
    stdin: IO[bytes] | None = field(default=None, repr=False)
    """Where `-` reads from (default: the process's stdin)."""
    stdout: IO[bytes] | None = field(default=None, repr=False)
    """Where output goes without a file (default: the process's stdout)."""
    dims: int | None = None
    """Vector commands: keep the first N dimensions of each vector, re-normalised (a
    Matryoshka-trained model's prefixes); None: all of them."""
    chunk_size: int | None = None
    """Rows read, tokenized and written at a time (default: max(1024, 32 × batch size))."""
