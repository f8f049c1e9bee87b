"""The task recipe behind train-encoder (one task) and train-mtl (several): one shared
encoder trained on every task at once, whatever its kind (each asks its objective,
sentcli/objectives/), freeze modes, task schedules, per-task losses and scores, and the
test pass with each task's plot. The tasks are loaded and tokenized by training/tasks.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tokenizers import Tokenizer

from sentcli import checkpoint as ckpt
from sentcli import dist
from sentcli.config import Balance, BestBy, RunConfig
from sentcli.data.batching import TokenBuckets, collate, length_batches
from sentcli.device import seed_everything, to_device
from sentcli.errors import ConfigError
from sentcli.events import EvalLog, EvalOnly, Groups, InitFrom, OnEvent
from sentcli.freeze import FreezeSpec, apply_freeze, group_of, parameter_groups, parse_freeze
from sentcli.inference.embed import apply_batched, predict_logits, vector_fn
from sentcli.metrics import HEADLINE, grad_summary, history_of, throughput
from sentcli.model import MultiTaskModel, training_flops_per_token
from sentcli.objectives import Batch, objective
from sentcli.training import tracking
from sentcli.training.runner import Outcome, TrainResult, run_training
from sentcli.training.tasks import TaskSet, load_tasks

Step = list[tuple[str, np.ndarray]]
"""One optimizer step: (task, row indices) for each batch it takes."""


def plan_steps(
    batches: dict[str, list[np.ndarray]],
    schedule: str,
    rng: np.random.Generator,
    temperature: float = 1.0,
) -> list[Step]:
    """The steps of one epoch. Every batch is used once; a task that runs out drops out.

    round-robin: one batch per step, tasks in turn. proportional: one batch per step from a
    task drawn with probability ∝ size^(1/temperature) among those left. joint: one batch of
    every task left per step (their losses are summed).
    """
    queues = {t: list(b) for t, b in batches.items() if b}
    steps: list[Step] = []
    if schedule == "joint":
        while queues:
            steps.append([(t, q.pop(0)) for t, q in queues.items()])
            queues = {t: q for t, q in queues.items() if q}
    elif schedule == "round-robin":
        while queues:
            for t in list(queues):
                steps.append([(t, queues[t].pop(0))])
            queues = {t: q for t, q in queues.items() if q}
    elif schedule == "proportional":
        sizes = {t: len(q) for t, q in queues.items()}
        while queues:
            names = list(queues)
            weights = np.array([sizes[t] ** (1.0 / temperature) for t in names])
            t = names[rng.choice(len(names), p=weights / weights.sum())]
            steps.append([(t, queues[t].pop(0))])
            if not queues[t]:
                del queues[t]
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return steps


def weighted_loss(
    model: MultiTaskModel,
    batches: Sequence[Batch],
    weights: dict[str, float],
    shares: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ weight[task] · loss(task) over a step's batches, and each task's unweighted loss.
    `shares` scales a task's mean loss into its part of a batch split over ranks (dist.share)."""
    losses = {}
    for b in batches:
        loss = b.objective.loss(model, b)
        share = (shares or {}).get(b.task, 1.0)
        losses[b.task] = loss if share == 1.0 else loss * share
    # a step of one task at weight 1 (the usual round-robin step) adds no kernels
    weighted = [
        loss if (w := weights.get(t, 1.0)) == 1.0 else w * loss for t, loss in losses.items()
    ]
    total = weighted[0] if len(weighted) == 1 else torch.stack(weighted).sum()
    return total, losses


class StepLoss(nn.Module):
    """A step's weighted loss as one forward call: DistributedDataParallel expects one
    forward per backward, also when a joint step runs every task through the trunk."""

    def __init__(self, model: MultiTaskModel, weights: dict[str, float]) -> None:
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(
        self, batches: Sequence[Batch], shares: dict[str, float] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return weighted_loss(self.model, batches, self.weights, shares)


def transfer_trunk(source: nn.Module, target: MultiTaskModel) -> dict[str, int]:
    """Copy a trained run's trunk into `target` (strict: every tensor, every shape)."""
    weights = source.get_submodule("trunk").state_dict()
    target.trunk.load_state_dict(weights, strict=True)
    return {"tensors": len(weights), "parameters": sum(v.numel() for v in weights.values())}


def transfer(source: nn.Module, target: MultiTaskModel, init: str) -> InitFrom:
    """The trunk, and the heads of tasks the source has with the same number of labels."""
    moved = transfer_trunk(source, target)
    kept = []
    if isinstance(source, MultiTaskModel):
        for name, head in target.heads.items():
            # nn.ModuleDict has no .get
            old = source.heads[name] if name in source.heads else None  # noqa: SIM401
            if old is not None and [p.shape for p in old.parameters()] == [
                p.shape for p in head.parameters()
            ]:
                head.load_state_dict(old.state_dict())
                kept.append(name)
    new = [n for n in target.heads if n not in kept]
    return InitFrom(init, moved["tensors"], moved["parameters"], kept, new)


class TaskRecipe:
    """Batches are steps of (task, row indices); the loss is the weighted sum of the step's
    task losses, each its objective's (a head's cross-entropy, a similarity objective on the
    sentence vectors…). Per-task train losses are summed between evaluations (and saved for
    --resume, so a resumed run's table matches an uninterrupted one)."""

    def __init__(
        self,
        model: MultiTaskModel,
        config: RunConfig,
        tasks: TaskSet,
        freeze: FreezeSpec,
        rt: dist.Runtime,
    ) -> None:
        self.model, self.cfg, self.tasks, self.freeze = model, config.train, tasks, freeze
        self.n_layer = config.model.n_layer
        self.device, self.ranks, self.dtype = rt.device, rt.ranks, rt.dtype
        device, ranks = rt.device, rt.ranks
        self.names = tasks.names
        self.objectives = {t: objective(tasks.specs[t], self.cfg, ranks) for t in self.names}
        sides = {t: tasks.side_lengths(t) for t in self.names}
        self.lengths = {t: s.sum(axis=0) for t, s in sides.items()}  # tokens a row trains on
        self.widths = {t: s.max(axis=0) for t, s in sides.items()}  # what it pads to
        # --batch-tokens: fixed shapes per bucket (every side and view of a row counts)
        self.buckets = {
            t: TokenBuckets(
                self.cfg.batch_tokens, config.model.block_size,
                len(s) * self.objectives[t].views, ranks.world,
            )
            for t, s in sides.items()
        }  # fmt: skip
        weights = {t: self.cfg.task_weights.get(t, 1.0) for t in self.names}
        self.step_loss = StepLoss(model, weights)
        self.sums = {t: torch.zeros((), device=device) for t in self.names}
        self.counts = {t: [0, 0] for t in self.names}  # batches, examples since the last eval
        # A split's logits or vectors since the last training step: the final test pass of
        # a task without a test split reuses the last validation pass instead of redoing it.
        self.cached: dict[tuple[str, str], list[np.ndarray]] = {}

    def step_module(self) -> nn.Module:
        return self.step_loss

    def on_epoch(self, epoch: int) -> bool:
        before = [p.requires_grad for p in self.model.parameters()]
        every = self.cfg.unfreeze_every
        apply_freeze(self.model, self.freeze, self.n_layer, epoch // every if every else 0)
        return before != [p.requires_grad for p in self.model.parameters()]

    def group_of(self, name: str) -> str | None:
        return group_of(name)

    def epoch_batches(self, epoch: int) -> Sequence[Step]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, epoch])
        per_task = {t: self._batches(t, rng) for t in self.names}
        if cfg.balance == Balance.upsample:  # smaller tasks go round again (reshuffled)
            most = max(len(b) for b in per_task.values())
            for t, batches in per_task.items():
                while len(batches) < most:
                    batches += self._batches(t, rng)
                per_task[t] = batches[:most]
        per_task = {t: [b for b in v if dist.usable(b, self.ranks)] for t, v in per_task.items()}
        return plan_steps(per_task, cfg.schedule, rng, cfg.temperature)

    def _batches(self, t: str, rng: np.random.Generator) -> list[np.ndarray]:
        if self.cfg.batch_tokens:
            return self.buckets[t].batches(self.widths[t], rng)
        return length_batches(self.lengths[t], self.cfg.batch_size, rng)

    def _batch(self, t: str, idx: np.ndarray) -> Batch:
        """This rank's part of task t's global batch `idx`, on the device: every side of
        each row (each `views` times) in one batch."""
        rows = dist.shard(idx, self.ranks)
        enc, dev, obj = self.tasks.data[(t, "train")], self.device, self.objectives[t]
        target = None if enc.target is None else torch.from_numpy(enc.target[rows])
        seqs = [side[i] for side in enc.sides * obj.views for i in rows]
        width = 0
        if self.cfg.batch_tokens:  # the batch's bucket: one shape per bucket
            width = self.buckets[t].width(len(idx), int(self.widths[t][idx].max()))
        ids, mask = collate(seqs, width)
        padded = min(len(s) for s in seqs) < ids.shape[1]  # from the lengths: no readback
        target = None if target is None else to_device(target, dev)
        ids, mask = to_device(ids, dev), to_device(mask, dev)
        return Batch(t, ids, mask, len(rows), len(idx), target, obj, padded)

    def loss(
        self, module: nn.Module, step: Step
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        self.cached.clear()  # the weights are about to change
        batches, shares = [], {}
        tokens = 0
        for t, idx in step:
            batches.append(self._batch(t, idx))
            shares[t] = dist.share(idx, self.ranks)
            self.counts[t][0] += 1
            self.counts[t][1] += len(idx)
            tokens += self.objectives[t].views * int(self.lengths[t][idx].sum())
        total, losses = module(batches, shares)
        for t, loss in losses.items():
            self.sums[t] += loss.detach()
        return total, tokens, losses

    def outputs_of(self, t: str, split: str) -> list[np.ndarray]:
        """What task t's objective scores a split from: its head's logits, or every side's
        sentence vectors (not normalised); computed once until the next training step.
        Every rank calls it (each computes its share; the rows are gathered)."""
        key = (t, split)
        if key not in self.cached:
            obj, bs = self.objectives[t], self.cfg.batch_size * 2
            if obj.outputs == "logits":

                def fn(mine: list[np.ndarray]) -> np.ndarray:
                    return predict_logits(self.model, t, mine, bs, self.device, self.dtype)

            else:
                embed = vector_fn(self.model, normalize=False)

                def fn(mine: list[np.ndarray]) -> np.ndarray:
                    self.model.eval()
                    return apply_batched(embed, mine, bs, self.device, self.dtype)

            sides = self.tasks.data[key].sides
            self.cached[key] = [dist.sharded(fn, side, self.ranks) for side in sides]
        return self.cached[key]

    def scores_of(self, t: str, split: str, full: bool) -> dict[str, Any]:
        """Task t's scores on a split, its objective's (every rank calls it)."""
        outputs = self.outputs_of(t, split)
        return self.objectives[t].scores(self.model, self.tasks.data[(t, split)], outputs, full)

    def evaluate(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for t in self.names:
            got = self.scores_of(t, "validation", full=False)
            batches, examples = self.counts[t]
            train_loss = dist.mean(self.sums[t], self.ranks).item() / batches if batches else None
            metrics |= {f"{t}/{k}": v for k, v in got.items()}
            metrics |= {
                f"{t}/train_loss": train_loss,
                f"{t}/batches": batches,
                f"{t}/examples": examples,
            }
            self.sums[t].zero_()
            self.counts[t] = [0, 0]
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The per-task train-loss accumulators."""
        return {
            t: [dist.mean(self.sums[t], self.ranks).item(), *self.counts[t]] for t in self.names
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for t, (loss, batches, examples) in state.items():
            self.sums[t].fill_(loss)
            self.counts[t] = [batches, examples]

    def test(self, output: Path, write: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """Per task: full scores on the test split (validation without one), and the split;
        with `write` (the main rank), each task's plot in report/ (its objective's)."""
        test: dict[str, Any] = {}
        splits = {}
        for t in self.names:
            split = self.tasks.test_split(t)
            outputs = self.outputs_of(t, split)
            test[t] = self.scores_of(t, split, full=True)
            splits[t] = split
            if write:
                (output / "report").mkdir(exist_ok=True)
                enc = self.tasks.data[(t, split)]
                self.objectives[t].plot(output / "report", split, test[t], outputs, enc)
        return test, splits


def _run(
    recipe: TaskRecipe,
    config: RunConfig,
    tok: Tokenizer,
    output: Path,
    rt: dist.Runtime,
    resume: bool,
    on_event: OnEvent,
) -> Outcome:
    """The epoch-0 row (every task before any training), then training; with --freeze all,
    only the evaluation."""
    model, ranks = recipe.model, recipe.ranks
    recipe.on_epoch(0)
    if on_event:
        on_event(Groups(parameter_groups(model), config.train.freeze))
    if not resume:
        model.eval()
        before = EvalLog(0, -1, recipe.evaluate())
        model.train()
        log = tracking.Log(output, config.train.log_to, ranks.main)
        log(asdict(before))
        log.close()
        if on_event:
            on_event(before)
    if recipe.freeze.all:  # nothing trains: the run is an evaluation of the model as it is
        if ranks.main:
            ckpt.save_run(output, config, model, tok, 0)
        if on_event:
            on_event(EvalOnly())
        return Outcome(0, 0, 0, ckpt.read_metrics(output))
    return run_training(output, config, model, tok, recipe, rt, resume, on_event)


def train_tasks(
    config: RunConfig,
    tok: Tokenizer,
    output: Path,
    resume: bool,
    source_model: nn.Module | None,
    on_event: OnEvent,
) -> TrainResult:
    """Load the tasks of `config`, build the model (from `source_model`'s weights with
    --init), train it into run folder `output` and score it on each task's test split."""
    cfg, specs = config.train, config.tasks
    names = [s.name for s in specs]
    freeze = parse_freeze(cfg.freeze, names, config.model.n_layer)
    rt = dist.runtime(cfg.device, cfg.precision)
    ranks, device = rt.ranks, rt.device
    dist.check_global_batch(cfg.batch_size, ranks)
    tasks = load_tasks(specs, config, tok, resume, ranks)
    config.tasks = list(tasks.specs.values())
    kinds = {t: objective(tasks.specs[t], cfg) for t in names}
    for kind in kinds.values():  # checks the Matryoshka widths against the model's
        kind.head(config.model.n_embd)
    lacking = [t for t, o in kinds.items() if o.headline not in HEADLINE]  # None: loss only
    if cfg.best_by == BestBy.metric and lacking:
        raise ConfigError(
            f"--best-by metric: task {', '.join(lacking)} has no metric, only its loss "
            "(SimCSE); use --best-by val-loss"
        )
    views = [t for t, o in kinds.items() if o.views > 1]
    if views and config.model.dropout == 0:
        raise ConfigError(
            f"task {', '.join(views)} is plain text (SimCSE): its two views differ only by "
            "dropout, and --dropout is 0; give --dropout 0.1, or --teacher RUN to distill"
        )
    heads = tasks.heads(config.model.n_embd)
    headless = [t for t in names if t not in heads]
    freeze = parse_freeze(cfg.freeze, list(heads), config.model.n_layer, headless)
    dist.barrier(ranks)  # every rank has checked the output folder before it is created
    if not resume and ranks.main:
        ckpt.create_run_dir(output)
    if config.model.embed_std is None and not resume:  # see ModelConfig.embed_std
        similarity_only = all(o.outputs != "logits" for o in kinds.values())
        config.model.embed_std = 1.0 if similarity_only else 0.02
    seed_everything(cfg.seed)
    model = MultiTaskModel(config.model, heads)
    init = None
    if source_model is not None:
        init = asdict(transfer(source_model, model, str(config.init)))
        if on_event:
            on_event(InitFrom(**init))
    model.to(device)
    recipe = TaskRecipe(model, config, tasks, freeze, rt)
    run = _run(recipe, config, tok, output, rt, resume, on_event)
    # after Ctrl-C, exit promptly: no test pass
    test, test_splits = ({}, {}) if run.interrupted else recipe.test(output, ranks.main)
    history, grad_norms = history_of(run.records), grad_summary(run.records)
    summary = {"kind": config.kind, "steps": run.steps, "tokens_seen": run.seen}
    summary |= {"init": init, "freeze": cfg.freeze}
    summary |= {"history": history, "test_splits": test_splits, "test": test}
    summary["grad_norms"] = grad_norms
    lengths = [len(x) for enc in tasks.data.values() for side in enc.sides for x in side]
    mean_length = float(np.mean(lengths))
    flops = training_flops_per_token(config.model, mean_length, lm_head=False)
    speed = throughput(run.records, flops, device)
    summary["throughput"] = speed
    summary |= dist.check_weights_agree(model, ranks)
    if ranks.main:
        ckpt.write_summary(output, summary)
    return TrainResult(
        output, config, run.steps, run.seen, run.interrupted, history,
        test, test_splits, init, grad_norms, speed,
    )  # fmt: skip
