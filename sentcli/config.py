"""Configuration dataclasses, their validation and their JSON round trip (stdlib only)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sentcli import __version__
from sentcli.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OBJECTIVES = ("clm", "mlm")
SCHEDULES = ("round-robin", "proportional", "joint")
BALANCES = ("none", "downsample", "upsample")
KINDS = ("lm", "encoder", "mtl")


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise ConfigError(f"invalid {what}: " + "; ".join(problems))


ACTIVATIONS = ("gelu_tanh", "gelu")
NORMS = ("pre", "post")
POOLINGS = ("mean", "cls", "max")


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
    activation: str = "gelu_tanh"
    """The MLP's GELU: gelu_tanh (GPT-2's approximation) or gelu (exact, erf; BERT's, and
    the faster one on CPUs)."""
    # What imported BERT-family checkpoints need (sentcli's own models keep the defaults):
    norm: str = "pre"
    """pre: x + f(LN(x)), then a final LayerNorm (GPT-2); post: LN(x + f(x)) (BERT)."""
    embed_norm: bool = False
    """A LayerNorm after the token + position embeddings (BERT)."""
    norm_eps: float = 1e-5
    n_inner: int = 0
    """The MLP's hidden width; 0 means 4 * n_embd."""
    pooling: str = "mean"
    """The sentence vector: mean of the real tokens (masked), the first token (cls) or the
    masked maximum (max)."""

    def __post_init__(self) -> None:
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
        for name, allowed in (("norm", NORMS), ("pooling", POOLINGS)):
            if getattr(self, name) not in allowed:
                problems.append(
                    f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})"
                )
        if self.n_inner < 0 or not self.norm_eps > 0:
            problems.append("n_inner must be 0 or more and norm_eps above 0")
        if self.activation not in ACTIVATIONS:
            problems.append(
                f"activation must be one of {', '.join(ACTIVATIONS)} (got {self.activation!r})"
            )
        _raise_if(problems, "model options")


@dataclass
class TrainConfig:
    """One training run: optimisation, schedule, device and evaluation."""

    epochs: int = 1
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 means run all epochs."""
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    """Linear warmup steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping."""
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"
    eval_every: int = 0
    """Evaluate every N steps; 0 means once per epoch (and always at the end)."""
    log_every: int = 10
    save_every: int = 0
    """Also save a resumable checkpoint every N steps; 0: only at evaluations and at the end."""
    val_fraction: float = 0.1
    """Share of train held out for validation when a source has no validation split."""
    max_eval_batches: int = 50
    objective: str = "clm"
    """Pretraining objective: next-token prediction (clm) or masked language modelling."""
    mlm_probability: float = 0.15
    freeze: str = "none"
    """Multi-task freeze modes, comma-separated (checked against the tasks by freeze.py)."""
    unfreeze_every: int = 0
    """Give one more frozen block back, from the top, every N epochs; 0 never."""
    backbone_lr_scale: float = 1.0
    """The trunk's learning rate as a share of the heads'."""
    schedule: str = "round-robin"
    temperature: float = 1.0
    """Proportional schedule: tasks drawn with probability ∝ size^(1/temperature)."""
    task_weights: dict[str, float] = field(default_factory=dict)
    balance: str = "none"
    max_samples_per_task: int = 0
    """Cut every task's train split to at most N rows (seeded); 0 keeps all."""
    explode_threshold: float = 1e3
    """A gradient-norm warning above this (and for non-finite norms)."""
    skip_nonfinite: int = 0
    """Skip up to N steps whose loss is NaN/inf (no update) before stopping; 0 stops at the
    first. Above 0 every step's loss is read back before its update (one sync per step)."""
    compile: bool = False
    max_time: float = 0.0
    """Stop after this many seconds of training (the LR schedule follows the clock); 0: no
    limit. Evaluations count; a resumed run continues the clock."""
    """torch.compile the training step (worth it on GPUs; compiling takes a while)."""

    def __post_init__(self) -> None:
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
                "skip_nonfinite",
                "max_time",
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
        if not self.temperature > 0:
            problems.append(f"temperature must be positive (got {self.temperature})")
        problems += [
            f"task weight {k}={w} must be positive" for k, w in self.task_weights.items() if w <= 0
        ]
        if not 0.0 < self.mlm_probability < 1.0:
            problems.append(f"mlm_probability must be in (0, 1) (got {self.mlm_probability})")
        for name, value, allowed in (
            ("device", self.device, DEVICES),
            ("precision", self.precision, PRECISIONS),
            ("objective", self.objective, OBJECTIVES),
            ("schedule", self.schedule, SCHEDULES),
            ("balance", self.balance, BALANCES),
        ):
            if value not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
        _raise_if(problems, "training options")


@dataclass
class TaskConfig:
    """One classification task: where its data comes from and its label names."""

    name: str
    source: str
    text_column: str | None = None
    label_column: str | None = None
    label_names: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    """Everything `config.json` in a run folder holds."""

    kind: str
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
        if d.get("kind") not in KINDS:
            raise CheckpointError(f"config.json has an unknown kind {d.get('kind')!r}")
        try:
            return cls(
                kind=d["kind"],
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
    file_values: dict[str, Any], overrides: dict[str, Any], base_model: ModelConfig | None = None
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
