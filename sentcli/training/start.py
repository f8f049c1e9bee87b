"""Starting (or resuming) a training run: the run folder's lock and overwrite rules, the
configs merged from flags, a --config file and an --init run, the checks that need them,
then the recipe's training function. What pretrain, train-encoder and train-mtl share."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch.nn as nn

from sentcli import checkpoint as ckpt
from sentcli.config import (
    BestBy,
    ModelConfig,
    Objective,
    Resume,
    RunConfig,
    RunKind,
    TaskConfig,
    TrainOptions,
    merge_configs,
    read_config_file,
)
from sentcli.data.sources import absolute
from sentcli.errors import ConfigError
from sentcli.events import OnEvent, TrainWarning
from sentcli.tokenizer import load_tokenizer
from sentcli.training.distill import check_teacher
from sentcli.training.lm import train_lm
from sentcli.training.multitask import train_tasks
from sentcli.training.runner import TrainResult, resume_config


def _given(*paths: str | Path | None) -> list[str | Path]:
    return [p for p in paths if p]


def _warn_other_tasks(given: list[TaskConfig], saved: list[TaskConfig], on_event: OnEvent) -> None:
    """A resumed run keeps its own tasks: say so when the command names others."""
    own = {(t.name, absolute(t.source)) for t in saved}
    other = [f"{t.name}={t.source}" for t in given if (t.name, absolute(t.source)) not in own]
    if other and on_event:
        kept = ", ".join(f"{t.name}={t.source}" for t in saved)
        message = f"--resume continues with the run's own tasks ({kept}); ignored: --task "
        on_event(TrainWarning(message + ", --task ".join(other)))


def start_tasks(
    kind: RunKind,
    specs: list[TaskConfig],
    output: Path,
    init: Path | None,
    tokenizer: Path | None,
    options: TrainOptions | None,
    config_file: Path | None,
    resume: Resume,
    overwrite: bool,
    on_event: OnEvent,
) -> TrainResult:
    """The task training behind train-encoder (one task) and train-mtl (several)."""
    with ckpt.run_lock(output):  # one writer per run folder
        # a teacher given only in --config is an input too (--overwrite must not delete it)
        from_file = read_config_file(config_file) if config_file is not None else {}
        teacher = (options or {}).get("teacher") or from_file.get("teacher")
        inputs = [s.source for s in specs] + _given(init, tokenizer, config_file, teacher)
        resume, overwrite = ckpt.resume_or_start(output, resume, overwrite, inputs)
        ckpt.check_run_dir(output, overwrite, resume, inputs)
        if resume:
            saved = resume_config(output, kind, options, config_file, on_event)
            _warn_other_tasks(specs, saved.tasks, on_event)
            tok = ckpt.load_run_tokenizer(output, saved)
            # the command's kind and this sentcli's version, as when the run was started
            config = RunConfig(
                kind,
                saved.model,
                saved.train,
                saved.tasks,
                init=saved.init,
                imported=saved.imported,
            )
            return train_tasks(config, tok, output, True, None, on_event)
        names = [s.name for s in specs]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"give each task once, as --task NAME=SOURCE (got {names})")
        if (init is None) == (tokenizer is None):
            raise ConfigError("give exactly one of --init RUN (pretrained) or --tokenizer FILE")
        source: nn.Module | None = None
        imported = None
        base: ModelConfig | None = None
        if init is not None:
            init_config, source, tok, _ = ckpt.load_run(init)
            base = init_config.model
            imported = init_config.imported  # its tokenizer's special tokens are not ours
        else:
            assert tokenizer is not None
            tok = load_tokenizer(tokenizer)
        model_cfg, train_cfg, given = merge_configs(options or {}, config_file, base)
        if init is None:
            model_cfg.vocab_size = tok.get_vocab_size()
        # Encoders attend both ways, also from a causal LM: on AG News that scored 1.1 points
        # above keeping the LM's causal mask (docs/benchmarks.md).
        if "causal" not in given:
            model_cfg.causal = False
        if train_cfg.teacher is not None:
            train_cfg.teacher = check_teacher(train_cfg.teacher)
        unknown = sorted(set(train_cfg.task_weights) - set(names))
        if unknown:
            raise ConfigError(
                f"--task-weight names unknown task(s) {', '.join(unknown)}; tasks: "
                f"{', '.join(names)}"
            )
        ref = str(init) if init else None
        # local sources are recorded absolute, so evaluate works from any folder
        specs = [replace(t, source=absolute(t.source)) for t in specs]
        config = RunConfig(kind, model_cfg, train_cfg, list(specs), init=ref, imported=imported)
        return train_tasks(config, tok, output, False, source, on_event)


def start_lm(
    data: list[str],
    output: Path,
    tokenizer: Path | None,
    options: TrainOptions | None,
    config_file: Path | None,
    text_column: str | None,
    resume: Resume,
    overwrite: bool,
    on_event: OnEvent,
) -> TrainResult:
    """The language-model training behind pretrain."""
    with ckpt.run_lock(output):  # one writer per run folder
        inputs = [*data, *_given(tokenizer, config_file)]
        resume, overwrite = ckpt.resume_or_start(output, resume, overwrite, inputs)
        ckpt.check_run_dir(output, overwrite, resume, inputs)
        if resume:
            config = resume_config(output, RunKind.lm, options, config_file, on_event)
            tok = ckpt.load_run_tokenizer(output, config)
        else:
            if tokenizer is None:
                raise ConfigError(
                    "pretrain needs --tokenizer (build one with sentcli build-tokenizer)"
                )
            tok = load_tokenizer(tokenizer)
            model_cfg, train_cfg, _ = merge_configs(options or {}, config_file, None)
            model_cfg.vocab_size = tok.get_vocab_size()
            model_cfg.causal = train_cfg.objective == Objective.clm
            if train_cfg.best_by == BestBy.metric:
                raise ConfigError(
                    "--best-by metric: a language model has no metric but its validation "
                    "loss; use --best-by val-loss"
                )
            config = RunConfig(RunKind.lm, model_cfg, train_cfg, data=[absolute(d) for d in data])
        return train_lm(config, tok, output, text_column, resume, on_event)
