"""The task recipe behind train-encoder (one task) and train-mtl (several): one shared
encoder, a head per classification task, similarity tasks on the vectors themselves
(training/similarity.py, training/distill.py), freeze modes, task schedules, per-task
losses and scores, and the test pass with its confusion matrices and scatter plots. The
tasks are loaded and tokenized by training/tasks.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tokenizers import Tokenizer

from sentcli import checkpoint as ckpt
from sentcli import dist
from sentcli.config import Balance, RunConfig, TaskConfig, TaskKind
from sentcli.data.batching import collate, column_array, encode_rows, length_batches
from sentcli.data.tasks import load_eval_split
from sentcli.device import resolve_device, resolve_precision, seed_everything, to_device
from sentcli.errors import ConfigError
from sentcli.events import EvalLog, EvalOnly, Groups, InitFrom, OnEvent
from sentcli.freeze import FreezeSpec, apply_freeze, group_of, parameter_groups, parse_freeze
from sentcli.inference.embed import apply_batched, predict_logits, vector_fn
from sentcli.metrics import (
    classification_metrics,
    grad_summary,
    history_of,
    plot_confusion,
    plot_scatter,
    throughput,
)
from sentcli.model import MultiTaskModel, training_flops_per_token
from sentcli.training.distill import distill_loss
from sentcli.training.runner import Outcome, TrainResult, run_training
from sentcli.training.similarity import cosines, pair_loss, pair_metrics
from sentcli.training.tasks import Encoded, TaskSet, load_tasks

if TYPE_CHECKING:
    pass

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


TaskBatch = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]
"""A classification batch: (task, input ids, attention mask, labels)."""


@dataclass
class PairBatch:
    """A similarity batch: every side's texts in one [sides · B, T] batch (one forward
    pass), the target (scores, or None) and the loss of the sides' vectors."""

    task: str
    ids: torch.Tensor
    mask: torch.Tensor
    rows: int
    """Texts per side."""
    target: torch.Tensor | None
    loss: Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor]


def weighted_loss(
    model: nn.Module,
    batches: Sequence[TaskBatch | PairBatch],
    weights: dict[str, float],
    shares: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ weight[task] · loss(task) over a step's batches, and each task's unweighted loss.
    `shares` scales a task's mean loss into its part of a batch split over ranks (dist.share)."""
    losses = {}
    for b in batches:
        if isinstance(b, PairBatch):
            assert isinstance(model, MultiTaskModel)
            vectors = model.embed(b.ids, b.mask)  # [sides · B, C]
            task, loss = b.task, b.loss(list(torch.split(vectors, b.rows)), b.target)
        else:
            task, ids, mask, y = b
            loss = model(ids, mask, task, y)[1]
        losses[task] = loss * (shares or {}).get(task, 1.0)
    total = torch.stack([weights.get(t, 1.0) * loss for t, loss in losses.items()]).sum()
    return total, losses


class StepLoss(nn.Module):
    """A step's weighted loss as one forward call: DistributedDataParallel expects one
    forward per backward, also when a joint step runs every task through the trunk."""

    def __init__(self, model: MultiTaskModel, weights: dict[str, float]) -> None:
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(
        self, batches: Sequence[TaskBatch | PairBatch], shares: dict[str, float] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return weighted_loss(self.model, batches, self.weights, shares)


def scores(logits: np.ndarray, y: np.ndarray, label_names: list[str], full: bool) -> dict[str, Any]:
    """Validation loss plus accuracy and macro-F1 (and, with `full`, the per-class detail)."""
    t = torch.from_numpy(logits)
    val_loss = float(torch.nn.functional.cross_entropy(t, torch.from_numpy(y)))
    metrics = classification_metrics(y, logits.argmax(axis=1), label_names)
    if not full:
        metrics = {k: metrics[k] for k in ("accuracy", "macro_f1")}
    return {"val_loss": val_loss, **metrics}


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


class ClassifyRecipe:
    """Batches are steps of (task, row indices); the loss is the weighted sum of the step's
    task losses: a head's cross-entropy for classification tasks, a similarity objective on
    the sentence vectors for the others (training/similarity.py). Per-task train losses are
    summed between evaluations (and saved for --resume, so a resumed run's table matches an
    uninterrupted one)."""

    def __init__(
        self,
        model: MultiTaskModel,
        config: RunConfig,
        tasks: TaskSet,
        freeze: FreezeSpec,
        device: torch.device,
        ranks: dist.Dist,
    ) -> None:
        self.model, self.cfg, self.tasks, self.freeze = model, config.train, tasks, freeze
        self.n_layer = config.model.n_layer
        self.device, self.ranks = device, ranks
        self.dtype = resolve_precision(self.cfg.precision, device)
        self.names = tasks.names
        self.lengths = {t: tasks.lengths(t) for t in self.names}
        weights = {t: self.cfg.task_weights.get(t, 1.0) for t in self.names}
        self.step_loss = StepLoss(model, weights)
        self.sums = {t: torch.zeros((), device=device) for t in self.names}
        self.counts = {t: [0, 0] for t in self.names}  # batches, examples since the last eval
        # A split's logits or vectors since the last training step: the final test pass of
        # a task without a test split reuses the last validation pass instead of redoing it.
        self.outputs: dict[tuple[str, str, str], list[np.ndarray]] = {}

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
        per_task = {t: length_batches(self.lengths[t], cfg.batch_size, rng) for t in self.names}
        if cfg.balance == Balance.upsample:  # smaller tasks go round again (reshuffled)
            most = max(len(b) for b in per_task.values())
            for t, batches in per_task.items():
                while len(batches) < most:
                    batches += length_batches(self.lengths[t], cfg.batch_size, rng)
                per_task[t] = batches[:most]
        per_task = {t: [b for b in v if dist.usable(b, self.ranks)] for t, v in per_task.items()}
        return plan_steps(per_task, cfg.schedule, rng, cfg.temperature)

    def _pair_loss(
        self, t: str, n: int, ranks: dist.Dist | None = None
    ) -> Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor]:
        """Task t's similarity loss of a global batch of n rows (`ranks`: default, this
        run's processes, whose vectors form the in-batch candidates)."""
        cfg, spec = self.cfg, self.tasks.specs[t]
        return partial(
            pair_loss, self.tasks.kind(t), loss=cfg.similarity_loss, scale=cfg.similarity_scale,
            score_range=spec.score_range, n=n, ranks=ranks or self.ranks,
        )  # fmt: skip

    def _projection(self, t: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """A distillation task's map onto the teacher's width (identity when equal)."""
        heads = self.model.heads
        return heads[t] if t in heads else nn.Identity()  # noqa: SIM401 (ModuleDict: no .get)

    def _distill_loss(
        self, t: str
    ) -> Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor]:
        project = self._projection(t)

        def loss(sides: list[torch.Tensor], target: torch.Tensor | None) -> torch.Tensor:
            assert target is not None
            return distill_loss(project(sides[0]), target)

        return loss

    def _batch(self, t: str, idx: np.ndarray) -> TaskBatch | PairBatch:
        """This rank's part of task t's global batch `idx`, on the device."""
        rows = dist.shard(idx, self.ranks)
        enc, dev, kind = self.tasks.data[(t, "train")], self.device, self.tasks.kind(t)
        target = None if enc.target is None else torch.from_numpy(enc.target[rows])
        if kind == TaskKind.classification:
            assert target is not None
            ids, mask = collate([enc.sides[0][i] for i in rows])
            return (t, to_device(ids, dev), to_device(mask, dev), to_device(target, dev))
        sides = enc.sides * 2 if kind == TaskKind.text else enc.sides  # SimCSE: two views
        ids, mask = collate([side[i] for side in sides for i in rows])
        target = None if target is None else to_device(target, dev)
        loss = self._distill_loss(t) if kind == TaskKind.distill else self._pair_loss(t, len(idx))
        return PairBatch(t, to_device(ids, dev), to_device(mask, dev), len(rows), target, loss)

    def loss(
        self, module: nn.Module, step: Step
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        self.outputs.clear()  # the weights are about to change
        batches, shares = [], {}
        tokens = 0
        for t, idx in step:
            batches.append(self._batch(t, idx))
            shares[t] = dist.share(idx, self.ranks)
            self.counts[t][0] += 1
            self.counts[t][1] += len(idx)
            views = 2 if self.tasks.kind(t) == TaskKind.text else 1
            tokens += views * int(self.lengths[t][idx].sum())
        total, losses = module(batches, shares)
        for t, loss in losses.items():
            self.sums[t] += loss.detach()
        return total, tokens, losses

    def _outputs(
        self, what: str, t: str, split: str, fn: Callable[..., np.ndarray]
    ) -> list[np.ndarray]:
        """`fn` over every side of a split, computed once until the next training step."""
        key = (what, t, split)
        if key not in self.outputs:
            sides = self.tasks.data[(t, split)].sides
            self.outputs[key] = [dist.sharded(fn, side, self.ranks) for side in sides]
        return self.outputs[key]

    def logits_of(self, t: str, split: str) -> np.ndarray:
        def fn(mine: list[np.ndarray]) -> np.ndarray:
            return predict_logits(
                self.model, t, mine, self.cfg.batch_size * 2, self.device, self.dtype
            )

        return self._outputs("logits", t, split, fn)[0]

    def vectors_of(self, t: str, split: str) -> list[np.ndarray]:
        """Sentence vectors of every side of a split (not normalised)."""
        embed = vector_fn(self.model, normalize=False)

        def fn(mine: list[np.ndarray]) -> np.ndarray:
            self.model.eval()
            return apply_batched(embed, mine, self.cfg.batch_size * 2, self.device, self.dtype)

        return self._outputs("vectors", t, split, fn)

    def scores_of(
        self, t: str, split: str, full: bool, sides: list[np.ndarray] | None = None
    ) -> dict[str, Any]:
        """A task's scores on a split: classification as before; similarity: its loss over
        batches of the split and its metrics (training/similarity.py), from `sides` (the
        split's vectors) when given. Every rank calls it (the rows are gathered)."""
        enc, kind = self.tasks.data[(t, split)], self.tasks.kind(t)
        if kind == TaskKind.classification:
            assert enc.target is not None
            names = self.tasks.specs[t].label_names
            return scores(self.logits_of(t, split), enc.target, names, full)
        sides = sides if sides is not None else self.vectors_of(t, split)
        if kind == TaskKind.distill:
            return self._distill_scores(t, sides[0], enc, full)
        out: dict[str, Any] = {"val_loss": self._val_loss(t, sides, enc.target)}
        out |= pair_metrics(kind, sides, enc.target)
        if full:
            out |= {"kind": str(kind), "pairs": len(enc)}
        return out

    def _distill_scores(
        self, t: str, vectors: np.ndarray, enc: Encoded, full: bool
    ) -> dict[str, Any]:
        """The loss and the mean cosine of the (projected) vectors to the teacher's."""
        assert enc.target is not None
        with torch.no_grad():
            v = self._projection(t)(torch.from_numpy(vectors).to(self.device)).float().cpu()
        teacher = torch.from_numpy(np.array(enc.target, dtype=np.float32))  # off the memmap
        out: dict[str, Any] = {
            "val_loss": float(distill_loss(v, teacher)),
            "cosine": float((F.normalize(v, dim=-1) * teacher).sum(dim=1).mean()),
        }
        return out | ({"kind": "distill", "pairs": len(enc)} if full else {})

    def _val_loss(self, t: str, sides: list[np.ndarray], target: np.ndarray | None) -> float:
        """The task's loss over batches of the split (one process: the vectors are whole)."""
        kind, size = self.tasks.kind(t), self.cfg.batch_size
        losses = []
        for i in range(0, len(sides[0]), size):
            part = [torch.from_numpy(s[i : i + size]) for s in sides]
            if kind == TaskKind.text:
                part = part * 2
            y = None if target is None else torch.from_numpy(target[i : i + size])
            fn = self._pair_loss(t, len(part[0]), dist.Dist())
            losses.append(float(fn(part, y)) * len(part[0]))
        return float(np.sum(losses)) / len(sides[0])  # weighted: a short last batch counts less

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
        with `write` (the main rank), the confusion (or, scored pairs, cosine-against-score)
        plots in report/."""
        test: dict[str, Any] = {}
        splits = {}
        for t in self.names:
            split = self.tasks.test_split(t)
            kind = self.tasks.kind(t)
            sides = None if kind == TaskKind.classification else self.vectors_of(t, split)
            test[t] = self.scores_of(t, split, full=True, sides=sides)
            splits[t] = split
            if write and kind in (TaskKind.classification, TaskKind.scored):
                (output / "report").mkdir(exist_ok=True)
                self._plot(output / "report", t, split, test[t], sides)
        return test, splits

    def _plot(
        self, report: Path, t: str, split: str, m: dict[str, Any], sides: list[np.ndarray] | None
    ) -> None:
        if sides is None:
            title = f"{t} ({split}, accuracy {m['accuracy']:.3f})"
            names = self.tasks.specs[t].label_names
            plot_confusion(report / f"confusion_{t}.png", m["confusion"], names, title)
            return
        target = self.tasks.data[(t, split)].target
        assert target is not None
        title = f"{t} ({split}, Spearman {100 * m['spearman']:.1f})"
        plot_scatter(report / f"similarity_{t}.png", cosines(sides[0], sides[1]), target, title)


def _run(
    recipe: ClassifyRecipe,
    config: RunConfig,
    tok: Tokenizer,
    output: Path,
    device: torch.device,
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
        if ranks.main:
            ckpt.append_metrics(output, asdict(before))
        if on_event:
            on_event(before)
    if recipe.freeze.all:  # nothing trains: the run is an evaluation of the model as it is
        if ranks.main:
            ckpt.save_run(output, config, model, tok, 0)
        if on_event:
            on_event(EvalOnly())
        return Outcome(0, 0, 0, ckpt.read_metrics(output))
    return run_training(output, config, model, tok, recipe, device, ranks, resume, on_event)


def train_classifier(
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
    ranks, device = dist.setup(resolve_device(cfg.device))
    dist.check_global_batch(cfg.batch_size, ranks)
    resolve_precision(cfg.precision, device)
    tasks = load_tasks(specs, config, tok, resume, ranks)
    config.tasks = list(tasks.specs.values())
    simcse = [t for t in names if tasks.kind(t) == TaskKind.text]
    if simcse and config.model.dropout == 0:
        raise ConfigError(
            f"task {', '.join(simcse)} is plain text (SimCSE): its two views differ only by "
            "dropout, and --dropout is 0; give --dropout 0.1, or --teacher RUN to distill"
        )
    if cfg.teacher is not None and TaskKind.distill not in map(tasks.kind, names):
        raise ConfigError(
            "--teacher RUN distills on plain-text tasks and this run has none; add --task "
            "NAME=TEXTS (a line file or an unlabelled folder), or drop --teacher"
        )
    heads = tasks.heads(config.model.n_embd)
    headless = [t for t in names if t not in heads]
    freeze = parse_freeze(cfg.freeze, list(heads), config.model.n_layer, headless)
    dist.barrier(ranks)  # every rank has checked the output folder before it is created
    if not resume and ranks.main:
        ckpt.create_run_dir(output)
    if config.model.embed_std is None and not resume:  # see ModelConfig.embed_std
        similarity_only = all(tasks.kind(t) != TaskKind.classification for t in names)
        config.model.embed_std = 1.0 if similarity_only else 0.02
    seed_everything(cfg.seed)
    model = MultiTaskModel(config.model, heads)
    init = None
    if source_model is not None:
        init = asdict(transfer(source_model, model, str(config.init)))
        if on_event:
            on_event(InitFrom(**init))
    model.to(device)
    recipe = ClassifyRecipe(model, config, tasks, freeze, device, ranks)
    run = _run(recipe, config, tok, output, device, resume, on_event)
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


def evaluate_head(
    model: nn.Module,
    tok: Tokenizer,
    own: TaskConfig,
    spec: TaskConfig,
    batch_size: int,
    dev: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, Any]:
    """A head's scores on `spec`'s source (labels mapped to the run's label names)."""
    assert isinstance(model, MultiTaskModel)
    names = own.label_names
    split, ds = load_eval_split(spec.name, spec.source, spec.text_column, spec.label_column, names)
    y = column_array(ds, "label", np.int64)
    seqs = encode_rows(tok, ds, model.config.block_size)
    logits = predict_logits(model, spec.name, seqs, batch_size, dev, dtype)
    return {"source": spec.source, "split": split, **scores(logits, y, names, True)}
