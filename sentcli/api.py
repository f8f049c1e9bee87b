"""One function per command. They validate first, then work; they return values and raise
`SentcliError`, and report progress only through the `on_event` callback."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn as nn

from sentcli import checkpoint as ckpt
from sentcli import data as D
from sentcli import dist
from sentcli.config import (
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
    build_configs,
    read_config_file,
)
from sentcli.embed import (
    PRECISIONS,
    InferenceStats,
    predict_logits,
    prepare,
    proba_fn,
    stream,
    vector_fn,
)
from sentcli.errors import CheckpointError, ConfigError, DataError
from sentcli.freeze import apply_freeze, group_of, parameter_groups, parse_freeze
from sentcli.metrics import classification_metrics, plot_confusion
from sentcli.model import LanguageModel, MultiTaskModel, training_flops_per_token
from sentcli.multitask import StepLoss, grad_summary, plan_steps
from sentcli.runner import (
    OnEvent,
    dtype_name,
    history_of,
    plot_curves,
    run_training,
    throughput,
    write_summary,
)
from sentcli.streams import (
    VECTOR_FORMATS,
    LabelWriter,
    Sink,
    TextInput,
    check_output,
    vector_sink,
)
from sentcli.tokenizer import (
    KINDS,
    UNK_ID,
    TokenizerSummary,
    encode,
    load_tokenizer,
    train_tokenizer,
)
from sentcli.train import (
    EvalLog,
    autocast,
    resolve_device,
    resolve_precision,
    seed_everything,
    to_device,
)

MODEL_ENV = "SENTCLI_MODEL"
DEFAULT_MODEL = Path(__file__).parent / "default_model"
"""The multi-task model (topic + sentiment) shipped in the package; `make default-model`."""
STRUCTURAL = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "activation")


@dataclass
class TrainResult:
    run_dir: Path
    config: RunConfig
    steps: int
    tokens_seen: int
    interrupted: int
    """The signal that stopped the run early (2 Ctrl-C, 15 SIGTERM; state saved), 0 if none."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One dict of validation metrics per evaluation."""
    test: dict[str, Any] = field(default_factory=dict)
    """Classifier runs: per task, metrics on the test split (validation when there is none)."""
    test_splits: dict[str, str] = field(default_factory=dict)
    init: dict[str, Any] | None = None
    """With --init: {"run", "tensors", "parameters"} actually transferred."""
    grad_norms: list[tuple[str, float, float, float, float]] = field(default_factory=list)
    """Classifier runs: (group, first, last, min, max) gradient norm over the logged steps."""
    throughput: dict[str, Any] = field(default_factory=dict)
    """tokens_per_s (median of the logged windows), flops_per_token, model_flops_per_s and,
    on CUDA, peak_memory_bytes."""


def build_tokenizer(
    data: list[str],
    output: Path,
    kind: str = "bpe",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = False,
    text_column: str | None = None,
    on_event: OnEvent = None,
) -> TokenizerSummary:
    """Train a tokenizer on the texts of `data` and write it to `output` (tokenizer.json)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; use one of {', '.join(KINDS)}")
    if vocab_size < 64:
        raise ConfigError(f"--vocab-size {vocab_size} is too small; use at least 64")
    if min_frequency < 1:
        raise ConfigError(f"--min-frequency must be at least 1 (got {min_frequency})")
    if not output.parent.is_dir():
        raise ConfigError(f"output folder {output.parent} does not exist; create it first")
    sources = D.load_texts(data, text_column)

    def batches() -> Any:
        seen = 0
        for _, ds in sources:
            for batch in D.iter_text_batches(ds):
                seen += len(batch)
                if on_event:
                    on_event({"kind": "progress", "texts": seen})
                yield batch

    tok = train_tokenizer(batches(), kind, vocab_size, min_frequency, lowercase)
    texts = tokens = unk = 0
    for _, ds in sources:
        for batch in D.iter_text_batches(ds, 10_000):
            for ids in encode(tok, batch):
                texts += 1
                tokens += len(ids) - 2  # [BOS] and [EOS] are not the text's tokens
                unk += int(np.count_nonzero(ids == UNK_ID))
    if texts == 0:
        raise DataError(f"no non-empty texts in {', '.join(data)}; give files with text")
    ckpt.write_text(output, tok.to_str())
    return TokenizerSummary(tok.get_vocab_size(), texts, tokens, unk)


def _configs(
    options: dict[str, Any], config_file: Path | None, base: ModelConfig | None
) -> tuple[ModelConfig, TrainConfig, set[str]]:
    """Model and train configs from defaults (or `base`), the file and the flags; also the
    names the user set."""
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


def _resume_config(
    output: Path, options: dict[str, Any] | None, config_file: Path | None, on_event: OnEvent
) -> RunConfig:
    """A resumed run's config.json, with the RUNTIME flags given now; a warning names the
    other flags, which are ignored (the run keeps its own settings)."""
    config = ckpt.read_config(output)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    runtime = {k: v for k, v in given.items() if k in RUNTIME}
    if runtime:
        config.train = TrainConfig(**{**asdict(config.train), **runtime})
    ignored = [f"--{k.replace('_', '-')}" for k in given if k not in RUNTIME]
    ignored += ["--config"] if config_file else []
    if ignored and on_event:
        message = (
            "--resume continues with the run's own settings (its config.json); ignored: "
            + ", ".join(ignored)
        )
        on_event({"kind": "warning", "message": message})
    return config


def _check_batch(cfg: TrainConfig, ranks: dist.Dist) -> None:
    if cfg.batch_size < ranks.world:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is the global batch, split over {ranks.world} "
            f"processes: use at least {ranks.world}"
        )


def pretrain(
    data: list[str],
    output: Path,
    tokenizer: Path | None = None,
    options: dict[str, Any] | None = None,
    config_file: Path | None = None,
    text_column: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_event: OnEvent = None,
) -> TrainResult:
    """Pretrain a language model (next-token by default, or masked-LM) into run folder `output`."""
    ckpt.check_run_dir(output, overwrite, resume)
    if resume:
        config = _resume_config(output, options, config_file, on_event)
        tok = ckpt.load_run_tokenizer(output, config)
        data = config.data
    else:
        if tokenizer is None:
            raise ConfigError("pretrain needs --tokenizer (build one with sentcli build-tokenizer)")
        tok = load_tokenizer(tokenizer)
        model_cfg, train_cfg, _ = _configs(options or {}, config_file, None)
        model_cfg.vocab_size = tok.get_vocab_size()
        model_cfg.causal = train_cfg.objective == "clm"
        config = RunConfig("lm", model_cfg, train_cfg, data=list(data))
    cfg, mcfg = config.train, config.model
    ranks, device = dist.setup(resolve_device(cfg.device))
    _check_batch(cfg, ranks)
    resolve_precision(cfg.precision, device)
    train_texts, val_texts = D.split_texts(data, text_column, cfg.val_fraction, cfg.seed)
    train_blocks = D.pack_texts(tok, train_texts, mcfg.block_size, "training")
    val_blocks = D.pack_texts(tok, val_texts, mcfg.block_size, "validation")
    val_blocks = val_blocks[: cfg.max_eval_batches * cfg.batch_size]
    dist.barrier(ranks)  # every rank has checked the output folder before it is created
    if not resume and ranks.main:
        ckpt.create_run_dir(output)
    seed_everything(cfg.seed)
    model = LanguageModel(mcfg)

    def batch_loss(model: nn.Module, blocks: np.ndarray) -> tuple[torch.Tensor, int]:
        x = to_device(torch.from_numpy(blocks.astype(np.int64)), device)  # [B, T+1]
        if cfg.objective == "clm":
            _, loss = model(x[:, :-1], x[:, 1:])
        else:
            inputs, targets = D.mask_tokens(x[:, :-1], cfg.mlm_probability, mcfg.vocab_size)
            _, loss = model(inputs, targets)
        return loss, x.shape[0] * (x.shape[1] - 1)

    def evaluate() -> dict[str, float]:
        state = torch.get_rng_state()  # MLM masking draws; keep the training RNG stream intact
        torch.manual_seed(cfg.seed + ranks.rank)
        dtype = resolve_precision(cfg.precision, device)
        loss_sum, blocks_seen = 0.0, 0.0
        with torch.no_grad():
            for i in range(0, len(val_blocks), cfg.batch_size):
                blocks = dist.shard(val_blocks[i : i + cfg.batch_size], ranks)
                if len(blocks):
                    with autocast(device, dtype):
                        loss_sum += batch_loss(model, blocks)[0].item() * len(blocks)
                    blocks_seen += len(blocks)
        torch.set_rng_state(state)
        loss_sum, blocks_seen = dist.total([loss_sum, blocks_seen], ranks)
        val_loss = loss_sum / max(blocks_seen, 1)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))}

    def train_loss(module: nn.Module, idx: np.ndarray) -> tuple[torch.Tensor, int, dict]:
        loss, _ = batch_loss(module, train_blocks[dist.shard(idx, ranks)])
        return loss * dist.share(idx, ranks), len(idx) * mcfg.block_size, {}

    loop_args = {
        "device": device,
        "ranks": ranks,
        "epoch_batches": lambda e: [
            b
            for b in D.shuffled_batches(len(train_blocks), cfg.batch_size, cfg.seed, e)
            if dist.usable(b, ranks)
        ],
        "loss_fn": train_loss,
        "evaluate": evaluate,
    }
    steps, seen, interrupted, records = run_training(
        output, config, model, tok, loop_args, resume, on_event
    )
    history = history_of(records)
    summary = {"kind": "lm", "steps": steps, "tokens_seen": seen, "history": history}
    flops = training_flops_per_token(mcfg, mcfg.block_size, lm_head=True)
    speed = throughput(records, flops, device)
    summary["throughput"] = speed
    summary |= _check_in_step(model, ranks)
    if ranks.main:
        write_summary(output, summary)
    return TrainResult(output, config, steps, seen, interrupted, history, throughput=speed)


def _check_in_step(model: nn.Module, ranks: dist.Dist) -> dict[str, Any]:
    """Under torchrun: every rank's weight digest (they must agree) for the summary."""
    if not ranks.on:
        return {}
    digests = dist.gather_objects(dist.weights_digest(model), ranks)
    if len(set(digests)) > 1:
        raise RuntimeError(f"the ranks ended with different weights: {digests}")
    return {"ranks": ranks.world, "weights_sha256": digests}


def transfer_trunk(source: nn.Module, target: MultiTaskModel) -> dict[str, int]:
    """Copy a trained run's trunk into `target` (strict: every tensor, every shape)."""
    weights = source.get_submodule("trunk").state_dict()
    target.trunk.load_state_dict(weights, strict=True)
    return {"tensors": len(weights), "parameters": sum(v.numel() for v in weights.values())}


def _transfer(source: nn.Module, target: MultiTaskModel, init: Path) -> dict[str, Any]:
    """The trunk, and the heads of tasks the source has with the same number of labels."""
    info: dict[str, Any] = {"run": str(init), **transfer_trunk(source, target)}
    kept = []
    if isinstance(source, MultiTaskModel):
        for name, head in target.heads.items():
            old = source.heads[name] if name in source.heads else None
            if old is not None and [p.shape for p in old.parameters()] == [
                p.shape for p in head.parameters()
            ]:
                head.load_state_dict(old.state_dict())
                kept.append(name)
    info["heads_kept"] = kept
    info["heads_new"] = [n for n in target.heads if n not in kept]
    return info


def train_encoder(
    task: str,
    output: Path,
    init: Path | None = None,
    tokenizer: Path | None = None,
    options: dict[str, Any] | None = None,
    config_file: Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_event: OnEvent = None,
) -> TrainResult:
    """Train a sentence encoder with a classification head on one task (`NAME=SOURCE`),
    from a pretrained run (`init`) or from scratch with a tokenizer."""
    specs = [] if resume else [TaskConfig(*D.parse_task_spec(task), text_column, label_column)]
    return train_tasks(
        "encoder", specs, output, init, tokenizer, options, config_file, resume, overwrite, on_event
    )


def train_mtl(
    tasks: list[TaskConfig],
    output: Path,
    init: Path | None = None,
    tokenizer: Path | None = None,
    options: dict[str, Any] | None = None,
    config_file: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_event: OnEvent = None,
) -> TrainResult:
    """Multi-task training: one shared encoder, one head per task, the freeze modes and task
    schedule of the options (see TrainConfig)."""
    return train_tasks(
        "mtl", tasks, output, init, tokenizer, options, config_file, resume, overwrite, on_event
    )


def train_tasks(
    kind: str,
    specs: list[TaskConfig],
    output: Path,
    init: Path | None,
    tokenizer: Path | None,
    options: dict[str, Any] | None,
    config_file: Path | None,
    resume: bool,
    overwrite: bool,
    on_event: OnEvent,
) -> TrainResult:
    """The classifier training behind train-encoder (one task) and train-mtl (several)."""
    ckpt.check_run_dir(output, overwrite, resume)
    source_model: nn.Module | None = None
    label_names: dict[str, list[str]] = {}
    init_ref = str(init) if init else None
    if resume:
        config = _resume_config(output, options, config_file, on_event)
        tok = ckpt.load_run_tokenizer(output, config)
        specs = config.tasks
        label_names = {t.name: t.label_names for t in config.tasks}
        model_cfg, train_cfg, init_ref = config.model, config.train, config.init
        imported = config.imported
    else:
        names = [s.name for s in specs]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"give each task once, as --task NAME=SOURCE (got {names})")
        if (init is None) == (tokenizer is None):
            raise ConfigError("give exactly one of --init RUN (pretrained) or --tokenizer FILE")
        imported = None
        if init is not None:
            init_config, source_model, tok, _ = ckpt.load_run(init)
            base: ModelConfig | None = init_config.model
            imported = init_config.imported  # its tokenizer's special tokens are not ours
        else:
            tok = load_tokenizer(tokenizer)  # type: ignore[arg-type]
            base = None
        model_cfg, train_cfg, given = _configs(options or {}, config_file, base)
        if init is None:
            model_cfg.vocab_size = tok.get_vocab_size()
        # Encoders attend both ways, also from a causal LM: on AG News that scored 1.1 points
        # above keeping the LM's causal mask (README, measured figures).
        if "causal" not in given:
            model_cfg.causal = False
        unknown = sorted(set(train_cfg.task_weights) - set(names))
        if unknown:
            raise ConfigError(
                f"--task-weight names unknown task(s) {', '.join(unknown)}; "
                f"tasks: {', '.join(names)}"
            )
    names = [s.name for s in specs]
    freeze = parse_freeze(train_cfg.freeze, names, model_cfg.n_layer)
    ranks, device = dist.setup(resolve_device(train_cfg.device))
    _check_batch(train_cfg, ranks)
    dtype = resolve_precision(train_cfg.precision, device)
    cfg = train_cfg
    tds = {
        s.name: D.load_task(
            s.name, s.source, s.text_column, s.label_column, cfg.val_fraction, cfg.seed,
            label_names.get(s.name),
        )
        for s in specs
    }  # fmt: skip
    for td in tds.values():
        D.cut_train(td, cfg.max_samples_per_task, cfg.seed)
    if cfg.balance == "downsample":
        smallest = min(len(td.train) for td in tds.values())
        for td in tds.values():
            D.cut_train(td, smallest, cfg.seed)
    config = RunConfig(
        kind,
        model_cfg,
        train_cfg,
        tasks=[
            TaskConfig(s.name, s.source, s.text_column, s.label_column, tds[s.name].label_names)
            for s in specs
        ],
        init=init_ref,
        imported=imported,
    )
    splits = {
        (t, split): ds
        for t, td in tds.items()
        for split, ds in (("train", td.train), ("validation", td.validation), ("test", td.test))
        if ds is not None
    }
    seqs = {key: D.encode_rows(tok, ds, model_cfg.block_size) for key, ds in splits.items()}
    labels = {
        key: np.asarray(ds.with_format("numpy")["label"], dtype=np.int64)
        for key, ds in splits.items()
    }
    lengths = {t: np.array([len(x) for x in seqs[(t, "train")]]) for t in names}
    dist.barrier(ranks)  # every rank has checked the output folder before it is created
    if not resume and ranks.main:
        ckpt.create_run_dir(output)
    seed_everything(cfg.seed)
    model = MultiTaskModel(model_cfg, {t: len(tds[t].label_names) for t in names})
    init_info = None
    if source_model is not None:
        init_info = _transfer(source_model, model, init)  # type: ignore[arg-type]
        if on_event:
            on_event({"kind": "init", **init_info})
    model.to(device)
    weights = {t: cfg.task_weights.get(t, 1.0) for t in names}
    sums = {t: torch.zeros((), device=device) for t in names}
    counts = {t: [0, 0] for t in names}  # batches, examples since the last evaluation

    def on_epoch(epoch: int) -> bool:
        before = [p.requires_grad for p in model.parameters()]
        unfrozen = epoch // cfg.unfreeze_every if cfg.unfreeze_every else 0
        apply_freeze(model, freeze, model_cfg.n_layer, unfrozen)
        return before != [p.requires_grad for p in model.parameters()]

    def loss_fn(
        module: nn.Module, step: list[tuple[str, np.ndarray]]
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        batches, shares = [], {}
        for t, idx in step:
            rows = dist.shard(idx, ranks)  # this rank's part of the global batch
            ids, mask = D.collate([seqs[(t, "train")][i] for i in rows])
            y = torch.from_numpy(labels[(t, "train")][rows])
            batches.append(
                (t, to_device(ids, device), to_device(mask, device), to_device(y, device))
            )
            shares[t] = dist.share(idx, ranks)
            counts[t][0] += 1
            counts[t][1] += len(idx)
        total, losses = module(batches, shares)
        for t, loss in losses.items():
            sums[t] += loss.detach()
        return total, sum(int(lengths[t][idx].sum()) for t, idx in step), losses

    def snapshot() -> dict[str, Any]:
        """The per-task train-loss accumulators, for the train state (a resumed run's table
        then matches an uninterrupted one)."""
        return {t: [dist.mean(sums[t], ranks).item(), *counts[t]] for t in names}

    def restore(saved: dict[str, Any]) -> None:
        for t, (loss, batches, examples) in saved.items():
            sums[t].fill_(loss)
            counts[t] = [batches, examples]

    def logits_of(t: str, split: str) -> np.ndarray:
        """Each rank predicts its share of the rows; every rank gets all of them back."""
        rows = seqs[(t, split)]
        mine = [rows[i] for i in range(ranks.rank, len(rows), ranks.world)]
        logits = predict_logits(model, t, mine, cfg.batch_size * 2, device, dtype)
        return dist.gather_rows(logits, len(rows), ranks)

    def evaluate() -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for t in names:
            logits = logits_of(t, "validation")
            scores = _scores(logits, labels[(t, "validation")], tds[t].label_names, full=False)
            batches, examples = counts[t]
            train_loss = dist.mean(sums[t], ranks).item() / batches if batches else None
            metrics |= {f"{t}/{k}": v for k, v in scores.items()}
            metrics |= {
                f"{t}/train_loss": train_loss,
                f"{t}/batches": batches,
                f"{t}/examples": examples,
            }
            sums[t].zero_()
            counts[t] = [0, 0]
        return metrics

    def epoch_batches(epoch: int) -> list[Any]:
        rng = np.random.default_rng([cfg.seed, epoch])
        per_task = {t: D.length_batches(lengths[t], cfg.batch_size, rng) for t in names}
        if cfg.balance == "upsample":  # smaller tasks go round again (reshuffled) per epoch
            most = max(len(b) for b in per_task.values())
            for t, batches in per_task.items():
                while len(batches) < most:
                    batches += D.length_batches(lengths[t], cfg.batch_size, rng)
                per_task[t] = batches[:most]
        per_task = {t: [b for b in v if dist.usable(b, ranks)] for t, v in per_task.items()}
        return plan_steps(per_task, cfg.schedule, rng, cfg.temperature)

    on_epoch(0)
    if on_event:
        on_event({"kind": "groups", "groups": parameter_groups(model), "freeze": cfg.freeze})
    if not resume:  # the epoch-0 row: every task before any training
        model.eval()
        before = EvalLog(0, -1, evaluate())
        model.train()
        if ranks.main:
            ckpt.append_metrics(output, asdict(before))
        if on_event:
            on_event(before)
    if freeze.all:  # nothing trains: the run is an evaluation of the model as it is
        if ranks.main:
            ckpt.save_run(output, config, model, tok, 0)
        steps, seen, interrupted = 0, 0, 0
        records = ckpt.read_metrics(output)
        if on_event:
            on_event({"kind": "eval_only"})
    else:
        loop_args = {
            "device": device,
            "epoch_batches": epoch_batches,
            "loss_fn": loss_fn,
            "evaluate": evaluate,
            "on_epoch": on_epoch,
            "group_of": group_of,
            "step_module": StepLoss(model, weights),
            "ranks": ranks,
            "carry": (snapshot, restore),
        }
        steps, seen, interrupted, records = run_training(
            output, config, model, tok, loop_args, resume, on_event
        )
    history, grad_norms = history_of(records), grad_summary(records)
    report = output / "report"
    test: dict[str, Any] = {}
    test_splits = {}
    for t in [] if interrupted else names:  # after Ctrl-C, exit promptly: no test pass
        split = "test" if (t, "test") in seqs else "validation"
        logits = logits_of(t, split)
        test[t] = _scores(logits, labels[(t, split)], tds[t].label_names, full=True)
        test_splits[t] = split
        if ranks.main:
            report.mkdir(exist_ok=True)
            title = f"{t} ({split}, accuracy {test[t]['accuracy']:.3f})"
            plot_confusion(
                report / f"confusion_{t}.png", test[t]["confusion"], tds[t].label_names, title
            )
    summary = {
        "kind": kind,
        "steps": steps,
        "tokens_seen": seen,
        "init": init_info,
        "freeze": cfg.freeze,
    }
    summary |= {"history": history, "test_splits": test_splits, "test": test}
    summary["grad_norms"] = grad_norms
    mean_length = float(np.mean(np.concatenate(list(lengths.values()))))
    flops = training_flops_per_token(model_cfg, mean_length, lm_head=False)
    speed = throughput(records, flops, device)
    summary["throughput"] = speed
    summary |= _check_in_step(model, ranks)
    if ranks.main:
        write_summary(output, summary)
    return TrainResult(
        output,
        config,
        steps,
        seen,
        interrupted,
        history,
        test,
        test_splits,
        init_info,
        grad_norms,
        speed,
    )


def _scores(
    logits: np.ndarray, y: np.ndarray, label_names: list[str], full: bool
) -> dict[str, Any]:
    """Validation loss plus accuracy and macro-F1 (and, with `full`, the per-class detail)."""
    t = torch.from_numpy(logits)
    val_loss = float(torch.nn.functional.cross_entropy(t, torch.from_numpy(y)))
    metrics = classification_metrics(y, logits.argmax(axis=1), label_names)
    if not full:
        metrics = {k: metrics[k] for k in ("accuracy", "macro_f1")}
    return {"val_loss": val_loss, **metrics}


def evaluate(
    model_dir: Path,
    tasks: list[TaskConfig] | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of each
    task of a trained run, on the given sources or the test splits the run recorded."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    config, model, tok, _ = ckpt.load_run(model_dir)
    if config.kind == "lm" or not config.tasks:
        raise ConfigError(
            f"{model_dir} has no task heads (a pretraining or import-hf run); evaluate a run "
            "of train-encoder or train-mtl"
        )
    assert isinstance(model, MultiTaskModel)
    known = {t.name: t for t in config.tasks}
    specs = tasks or config.tasks
    unknown = [s.name for s in specs if s.name not in known]
    if unknown:
        raise ConfigError(
            f"{model_dir} has no task {', '.join(unknown)}; its tasks: {', '.join(known)}"
        )
    dev = resolve_device(device)
    dtype = resolve_precision(config.train.precision, dev)
    model.to(dev)
    results: dict[str, Any] = {}
    for s in specs:
        names = known[s.name].label_names
        split, ds = D.load_eval_split(s.name, s.source, s.text_column, s.label_column, names)
        y = np.asarray(ds.with_format("numpy")["label"], dtype=np.int64)
        seqs = D.encode_rows(tok, ds, config.model.block_size)
        logits = predict_logits(model, s.name, seqs, batch_size, dev, dtype)
        scores = _scores(logits, y, names, full=True)
        results[s.name] = {"source": s.source, "split": split, **scores}
    return {"model": str(model_dir), "tasks": results}


def report(run_dir: Path) -> dict[str, Any]:
    """Re-read a finished or interrupted run: its evaluations, test results and gradient
    norms; rewrites the plots in report/."""
    config = ckpt.read_config(run_dir)
    records = ckpt.read_metrics(run_dir)
    if not records:
        raise CheckpointError(f"{run_dir} has no metrics.jsonl records yet; nothing to report")
    summary_path = run_dir / "report" / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    plot_curves(run_dir, records)
    test = summary.get("test", {})
    for t, m in test.items():
        title = f"{t} ({summary['test_splits'][t]}, accuracy {m['accuracy']:.3f})"
        path = run_dir / "report" / f"confusion_{t}.png"
        plot_confusion(path, m["confusion"], m["label_names"], title)
    return {
        "run": str(run_dir),
        "kind": config.kind,
        "tasks": [t.name for t in config.tasks],
        "steps": max(r["step"] for r in records),
        "interrupted": records[-1]["kind"] == "interrupted",
        "history": history_of(records),
        "test": test,
        "test_splits": summary.get("test_splits", {}),
        "grad_norms": grad_summary(records),
        "warnings": [r["message"] for r in records if r["kind"] == "warning"],
    }


@dataclass
class InferenceResult:
    model: Path
    origin: str
    """Where the model came from: --model, $SENTCLI_MODEL or the default model."""
    device: str
    precision: str
    max_length: int
    stats: InferenceStats
    output: Path | None


def resolve_model(model: Path | None) -> tuple[Path, str]:
    """The run to use and where it came from: --model, else $SENTCLI_MODEL, else the default
    model shipped in the package."""
    if model is not None:
        return model, "--model"
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return Path(env), f"${MODEL_ENV}"
    if (DEFAULT_MODEL / ckpt.CONFIG).is_file():
        return DEFAULT_MODEL, "the default model"
    raise ConfigError(
        f"no model: pass --model RUN (a train-encoder or train-mtl run), set {MODEL_ENV}=RUN, "
        "or build the default model with `make default-model`"
    )


def _infer(
    input: str,
    output: Path | None,
    model: Path | None,
    formats: tuple[str, ...],
    options: dict[str, Any],
    make: Any,
    on_event: OnEvent,
) -> InferenceResult:
    """The pipeline embed and predict share: check everything, load the run, stream the
    input through `make(net, config) → (fn, sink_factory)`, write atomically."""
    batch_size, max_length, precision = (
        options["batch_size"],
        options["max_length"],
        options["precision"],
    )
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    check_output(output, formats, [input])
    source = TextInput(input, options["text_column"], options["id_column"], options["stdin"])
    path, origin = resolve_model(model)
    try:
        config, net, tok, _ = ckpt.load_run(path)
    except CheckpointError as e:
        raise CheckpointError(f"{origin}: {e}" if origin != "--model" else str(e)) from e
    block = config.model.block_size
    max_length = block if max_length is None else max_length
    if not 2 <= max_length <= block:
        raise ConfigError(
            f"--max-length {max_length}: the model reads 2 to {block} tokens per text"
        )
    dev = resolve_device(options["device"])
    dtype = prepare(net, dev, precision)
    fn, make_sink = make(net, config)
    name = "int8" if precision == "int8" else dtype_name(dtype)
    if on_event:
        on_event(
            {
                "kind": "infer_start",
                "total": source.total,
                "model": str(path),
                "origin": origin,
                "device": str(dev),
                "precision": name,
            }
        )
    stats = InferenceStats()
    chunk_size = options.get("chunk_size") or max(1024, 32 * batch_size)

    def run(f: IO[bytes]) -> None:
        sink: Sink = make_sink(f)
        chunks = source.chunks(chunk_size)
        for chunk, rows in stream(chunks, tok, max_length, fn, batch_size, dev, dtype, stats):
            sink.write(chunk, rows)
            if on_event:
                on_event({"kind": "progress", "done": stats.texts})
        sink.close()

    if output is None:
        run(options["stdout"] or sys.stdout.buffer)
    else:

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                run(f)

        ckpt.atomic_write(output, write)
    return InferenceResult(path, origin, str(dev), name, max_length, stats, output)


def embed(
    input: str,
    output: Path | None = None,
    model: Path | None = None,
    *,
    text_column: str | None = None,
    id_column: str | None = None,
    batch_size: int = 128,
    max_length: int | None = None,
    normalize: bool = True,
    device: str = "auto",
    precision: str = "auto",
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    chunk_size: int | None = None,
    on_event: OnEvent = None,
) -> InferenceResult:
    """Sentence vectors of every input row, in input order, to `output` (.npy, .jsonl, .csv,
    .tsv; written atomically) or as JSON lines to `stdout`."""
    options = dict(locals())

    def make(net: MultiTaskModel | LanguageModel, config: RunConfig) -> Any:
        return vector_fn(net, normalize), lambda f: vector_sink(f, output)

    return _infer(input, output, model, VECTOR_FORMATS, options, make, on_event)


def predict(
    input: str,
    output: Path | None = None,
    model: Path | None = None,
    task: str | None = None,
    *,
    top_k: int = 1,
    fmt: str = "tsv",
    text_column: str | None = None,
    id_column: str | None = None,
    batch_size: int = 128,
    max_length: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    chunk_size: int | None = None,
    on_event: OnEvent = None,
) -> InferenceResult:
    """The `top_k` labels of `task` and their probabilities for every input row, in input
    order, as TSV or JSON lines."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (got {top_k})")
    if fmt not in ("tsv", "jsonl"):
        raise ConfigError(f"--format {fmt}: use tsv or jsonl")
    options = dict(locals())

    def make(net: nn.Module, config: RunConfig) -> Any:
        names = {t.name: t.label_names for t in config.tasks}
        if not isinstance(net, MultiTaskModel) or not names:
            raise ConfigError(
                "the model has no task heads (a pretraining or import-hf run); train them with "
                "train-encoder or train-mtl --init, then predict with that run"
            )
        name = task if task is not None else (next(iter(names)) if len(names) == 1 else None)
        if name is None:
            raise ConfigError(f"the model has several tasks; pass --task {' or '.join(names)}")
        if name not in names:
            raise ConfigError(f"the model has no task {name!r}; its tasks: {', '.join(names)}")
        k = min(top_k, len(names[name]))
        return proba_fn(net, name), lambda f: LabelWriter(f, names[name], k, fmt)

    formats = (".tsv", ".txt") if fmt == "tsv" else (".jsonl",)
    return _infer(input, output, model, formats, options, make, on_event)


def import_hf(checkpoint: Path, output: Path, overwrite: bool = False) -> dict[str, Any]:
    """Convert a local Hugging Face BERT-family checkpoint folder (sentence-transformers
    layout too) into a sentcli run folder without task heads: embed uses it as it is, and
    train-encoder/train-mtl --init fine-tune it."""
    from sentcli.hf import read_checkpoint

    ckpt.check_run_dir(output, overwrite, resume=False)
    imp = read_checkpoint(checkpoint)
    model = MultiTaskModel(imp.config, {})
    for name, tensor in model.trunk.state_dict().items():
        got = imp.weights[name].shape
        if got != tensor.shape:
            raise CheckpointError(
                f"{checkpoint}: tensor for {name} has shape {tuple(got)}, config.json implies "
                f"{tuple(tensor.shape)}; the weights and config.json do not belong together"
            )
    model.trunk.load_state_dict(imp.weights, strict=True)
    parameters = sum(v.numel() for v in imp.weights.values())
    info = {
        "from": str(checkpoint),
        "architecture": imp.architecture,
        "tensors_read": imp.tensors_read,
        "tensors_written": len(imp.weights),
        "parameters": parameters,
        "skipped": imp.skipped,
        "pooling": imp.config.pooling,
        "max_length": imp.config.block_size,
    }
    run = RunConfig(kind="encoder", model=imp.config, train=TrainConfig(), imported=info)
    ckpt.create_run_dir(output)
    ckpt.save_run(output, run, model, imp.tokenizer, step=0)
    return {**info, "run": str(output), "notes": imp.notes, "vocab_size": imp.config.vocab_size}
