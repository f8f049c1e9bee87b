"""Classification metrics, what a run's metrics log says (evaluations, throughput,
gradient-norm warnings and summary) and the plots written to its report/."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sentcli.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows true, columns predicted; its shape never depends on which classes occur)."""
    # imported here: scikit-learn takes 1.3 s to import, and embed/predict never need it
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(label_names)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0.0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0.0)
        ),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "label_names": list(label_names),
    }


def plot_losses(
    path: Path,
    curves: dict[str, list[tuple[int, float]]],
    best: tuple[int, float] | None = None,
    kept: bool = False,
    by: str = "val-loss",
    scores: dict[str, list[tuple[int, float]]] | None = None,
) -> None:
    """Loss curves over steps, one line per named curve: train curves ("train", "<task>
    train") as lines, evaluations as points; a task's curves share its colour. `scores`:
    each task's headline metric at each evaluation, in a panel below (a task can overfit
    into confidence, its loss climbing while its accuracy still rises). `best`: the step
    and score of the best evaluation by `selection_score`, a vertical line in each panel
    (`kept`: its weights are the run's best.safetensors)."""
    from matplotlib.figure import Figure

    scores = {k: v for k, v in (scores or {}).items() if v}
    fig = Figure(figsize=(8.5, 6.5 if scores else 4), tight_layout=True)
    axes = fig.subplots(2 if scores else 1, 1, sharex=True, squeeze=False)[:, 0]
    colours: dict[str, str] = {}
    owner = {name: name.split()[0] if " " in name else name for name in [*curves, *scores]}
    for name in owner:
        colours.setdefault(owner[name], f"C{len(colours)}")  # matplotlib's cycle

    def by_colour(names: dict[str, Any]) -> list[str]:  # each panel's legend in one order
        return sorted(names, key=lambda n: list(colours).index(owner[n]))

    # a task's train and validation curves side by side in the legend
    for name in by_colour(curves):
        if not curves[name]:
            continue
        train = name.endswith("train")
        mean = name.endswith("train_loss")  # an evaluation's mean train loss: squares, dotted
        axes[0].plot(
            *zip(*curves[name], strict=True), marker=None if train else "s" if mean else "o",
            linestyle="-" if train else ":" if mean else "--", label=name,
            color=colours[owner[name]], linewidth=1.0 if train else 1.5,
            alpha=0.7 if train else 1.0,
        )  # fmt: skip
    for name in by_colour(scores):
        axes[-1].plot(
            *zip(*scores[name], strict=True), marker="o", linestyle="--", label=name,
            color=colours[owner[name]],
        )  # fmt: skip
    if best is not None:
        what = "kept (--keep-best)" if kept else "best evaluation"
        for ax in axes:
            ax.axvline(
                best[0], color="0.3", linestyle=":", linewidth=1.2,
                label=f"{what}:\nstep {best[0]}, {score_text(best[1], by, 3)}",
            )  # fmt: skip
    axes[0].set_ylabel("loss")
    axes[-1].set_xlabel("step")
    if scores:
        axes[-1].set_ylabel("validation metric")
    for ax in axes:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over
    save_figure(fig, path)


HEADLINE = ("accuracy", "spearman", "mrr", "cosine")
"""Each task kind's headline metric, the first of these its evaluation has (classification,
scored pairs, positive pairs, distillation); higher is better."""


def headlines(metrics: dict[str, Any]) -> dict[str, tuple[str, float] | None]:
    """Each task of an evaluation (the prefixes of its "task/name" keys) with its headline
    metric's name and value: the first of HEADLINE it holds; None: it holds none."""
    tasks = dict.fromkeys(k.split("/")[0] for k in metrics if "/" in k)
    return {
        t: next(
            ((h, float(v)) for h in HEADLINE if (v := metrics.get(f"{t}/{h}")) is not None), None
        )
        for t in tasks
    }


def selection_score(metrics: dict[str, Any], by: str = "val-loss") -> float | None:
    """The rule of --keep-best and --best-by, lower is better: "val-loss", the mean of the
    evaluation's validation losses (each task's, or the language model's); "metric", minus
    the mean of each task's headline metric. None: the evaluation has no such score for
    every task (a language model, SimCSE have no metric), or one is not finite."""
    if by == "metric":
        found = list(headlines(metrics).values())
        if not found or None in found:
            return None
        values = [-value for _, value in filter(None, found)]
    else:
        values = [
            float(v) for k, v in metrics.items() if k == "val_loss" or k.endswith("/val_loss")
        ]
    finite = [x for x in values if math.isfinite(x)]
    return sum(finite) / len(finite) if finite and len(finite) == len(values) else None


def score_text(score: float, by: str, digits: int = 4) -> str:
    """A `selection_score` as people read it: the mean val loss, or the mean metric."""
    return (
        f"mean metric {-score:.{digits}f}"
        if by == "metric"
        else f"mean val loss {score:.{digits}f}"
    )


def best_eval(history: list[dict[str, Any]], by: str = "val-loss") -> tuple[int, float] | None:
    """The step and score of the best evaluation during training by `selection_score` (the
    earliest of equals, as --keep-best keeps it), from a run's history (`history_of`); the
    one before the first step (epoch -1) is not a candidate."""
    best: tuple[int, float] | None = None
    for h in history:
        score = selection_score(h, by) if h["epoch"] >= 0 else None
        if score is not None and (best is None or score < best[1]):
            best = (h["step"], score)
    return best


def grad_series(
    records: list[dict[str, Any]],
) -> dict[str, tuple[list[tuple[int, float]], list[tuple[int, float]]]]:
    """Per gradient group, its (mean, max) norm at each logged step that has one (the max is
    the mean where a record predates `group_norms_max`)."""
    series: dict[str, tuple[list[tuple[int, float]], list[tuple[int, float]]]] = {}
    for r in records:
        maxes = r.get("group_norms_max", {})
        for group, norm in r.get("group_norms", {}).items():
            means, tops = series.setdefault(group, ([], []))
            means.append((r["step"], norm))
            tops.append((r["step"], maxes.get(group, norm)))
    return series


def plot_grad_norms(path: Path, records: list[dict[str, Any]]) -> None:
    """Gradient norm per parameter group over the logged steps (log scale): each window's
    mean as a line, its largest step as a faint line above it (a spike between logs)."""
    from matplotlib.figure import Figure

    series = grad_series(records)
    fig = Figure(figsize=(7, 4), tight_layout=True)
    ax = fig.add_subplot()
    for group, (means, tops) in series.items():
        (line,) = ax.plot(*zip(*means, strict=True), label=group)
        ax.plot(*zip(*tops, strict=True), color=line.get_color(), alpha=0.3, linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm")
    ax.set_title("mean since the previous log; faint: the largest step", fontsize=9)
    if series:
        ax.legend(fontsize=7)
    save_figure(fig, path)


ANNOTATE = 30
"""Classes up to which the confusion heatmap writes counts in its cells (and, up to twice
as many, names on its axes)."""


def plot_confusion(
    path: Path, confusion: list[list[int]], label_names: list[str], title: str
) -> None:
    """Heatmap of row-normalised rates, annotated with counts up to ANNOTATE classes (1,000
    classes made a million text cells and the plot never finished); at most 16 inches."""
    from matplotlib.figure import Figure

    counts = np.asarray(confusion)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(label_names)
    size = min(2 + 0.6 * n, 16.0)
    fig = Figure(figsize=(size + 1, size), tight_layout=True)
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ticks = range(n)
    if n <= 2 * ANNOTATE:
        ax.set_xticks(ticks, label_names, rotation=45, ha="right")
        ax.set_yticks(ticks, label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in ticks if n <= ANNOTATE else ():
        for j in ticks:
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)


IMAGE_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "tif", "tiff", "webp", "eps", "ps")
"""Image formats a plot may take: matplotlib's own, less pgf (needs LaTeX) and raw pixels."""


def image_formats() -> list[str]:
    """The file name extensions of IMAGE_FORMATS this matplotlib writes."""
    from matplotlib.backend_bases import FigureCanvasBase

    return [f for f in IMAGE_FORMATS if f in FigureCanvasBase.get_supported_filetypes()]


def save_figure(fig: Figure, path: Path) -> None:
    """Write `fig` whole or not at all (a temporary file renamed over `path`), in the format
    its name ends with; a label's missing glyph (emoji, CJK) is drawn as a box, silently."""

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Glyph .* missing from", UserWarning)
            fig.savefig(tmp, format=path.suffix.lower().lstrip(".") or "png")

    atomic_write(path, write)


LISTED_TEXTS = 40
"""similarity.png lists the full texts below the grid for at most this many."""


def matrix_range(matrix: np.ndarray) -> tuple[float, float]:
    """The colour scale of a cosine matrix: from its lowest value to its highest, off the
    diagonal (a text with itself is 1 and would flatten everything else)."""
    n = len(matrix)
    off = matrix[~np.eye(n, dtype=bool)] if n > 1 else matrix.ravel()
    if off.size == 0:
        return 0.0, 1.0
    low, high = float(off.min()), float(off.max())
    return (low, high) if high - low > 1e-6 else (low - 0.01, high + 0.01)


def plot_matrix(path: Path, texts: list[str], matrix: np.ndarray) -> None:
    """Heatmap of a cosine matrix: rows and columns numbered, the colour scale spanning the
    off-diagonal values' own range (the diagonal is drawn at the top colour), each
    number's full text listed below the grid."""
    import textwrap

    from matplotlib.figure import Figure

    n = len(texts)
    low, high = matrix_range(matrix)
    listed = [
        textwrap.fill(f"{i + 1}. {t}", width=100, subsequent_indent="     ")
        for i, t in enumerate(texts[:LISTED_TEXTS])
    ]
    lines = sum(x.count("\n") + 1 for x in listed)
    grid = max(3.0, 1.5 + 0.5 * n)
    below = 0.16 * lines + 0.2 if listed else 0.0
    fig = Figure(figsize=(max(grid + 2.0, 8.0), grid + below), layout="constrained")
    spec = fig.add_gridspec(2 if listed else 1, 1, height_ratios=[grid, below] if listed else [1])
    ax = fig.add_subplot(spec[0])
    im = ax.imshow(np.minimum(matrix, high), cmap="viridis", vmin=low, vmax=high)
    ticks = range(n)
    ax.set_xticks(ticks, [str(i + 1) for i in ticks])
    ax.set_yticks(ticks, [str(i + 1) for i in ticks])
    if n <= 20:
        middle = (low + high) / 2
        for i in ticks:
            for j in ticks:
                dark = min(matrix[i, j], high) < middle  # white on the dark end of viridis
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")  # fmt: skip
    ax.set_title(f"cosine similarity (colours: {low:.2f} to {high:.2f})")
    fig.colorbar(im, ax=ax, shrink=0.8)
    if listed:
        text = fig.add_subplot(spec[1])
        text.axis("off")
        more = f"\n… and {n - LISTED_TEXTS} more" if n > LISTED_TEXTS else ""
        text.text(0.0, 1.0, "\n".join(listed) + more, va="top", ha="left", fontsize=8,
                  transform=text.transAxes)  # fmt: skip
    save_figure(fig, path)


def plot_scatter(path: Path, cosine: np.ndarray, gold: np.ndarray, title: str) -> None:
    """Cosine of each pair against its gold score."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), tight_layout=True)
    ax = fig.add_subplot()
    ax.scatter(gold, cosine, s=4, alpha=0.4)
    ax.set_xlabel("gold score")
    ax.set_ylabel("cosine")
    ax.set_title(title)
    save_figure(fig, path)


def history_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations of a metrics log, flattened: step, epoch and the metrics."""
    return [
        {"step": r["step"], "epoch": r["epoch"], **r["metrics"]}
        for r in records
        if r["kind"] == "eval"
    ]


def throughput(
    records: list[dict[str, Any]], flops_per_token: float, device: torch.device
) -> dict[str, Any]:
    """Training speed for the summary: the median tokens/s of the logged windows (robust to
    the windows that held an evaluation or compilation), the model FLOP/s it implies and,
    on CUDA, the peak memory allocated."""
    rates = sorted(r["tokens_per_s"] for r in records if r["kind"] == "train")
    if not rates:
        return {}
    tps = rates[len(rates) // 2]
    out: dict[str, Any] = {
        "tokens_per_s": tps,
        "flops_per_token": flops_per_token,
        "model_flops_per_s": tps * flops_per_token,
    }
    if device.type == "cuda":
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    return out


def score_curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Each task's headline metric (HEADLINE) at each evaluation, as "<task> <metric>"."""
    out: dict[str, list[tuple[int, float]]] = {}
    for h in history_of(records):
        for task, found in headlines(h).items():
            if found is not None:
                out.setdefault(f"{task} {found[0]}", []).append((h["step"], found[1]))
    return out


def loss_curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """The curves of losses.png: the train loss at each log (one curve per task when there
    are several) and each validation loss at each evaluation."""
    history = history_of(records)
    train = [r for r in records if r["kind"] == "train"]
    tasks = list(dict.fromkeys(t for r in train for t in r.get("task_losses", {})))
    curves = {"train": [(r["step"], r["loss"]) for r in train]}
    if len(tasks) > 1:  # one train curve per task: the mixed one would hide each task's
        curves = {
            f"{t} train": [
                (r["step"], r["task_losses"].get(t, math.nan))  # NaN: no steps, a gap
                for r in train
                if r.get("task_losses")
            ]
            for t in tasks
        }
    keys = {k for h in history for k in h if k.endswith("loss")}
    if len(tasks) > 1:  # the per-task train curves above already hold the train losses
        keys = {k for k in keys if not k.endswith("train_loss")}
    for key in sorted(keys):
        curves[key.replace("/", " ")] = [
            (h["step"], h[key]) for h in history if h.get(key) is not None
        ]
    return curves


def plot_curves(
    run_dir: Path, records: list[dict[str, Any]], kept: bool = False, by: str = "val-loss"
) -> None:
    """report/losses.png (the best evaluation by `by` marked; `kept`: the run kept its
    weights) and report/grad_norms.png from a run's metrics records."""
    (run_dir / "report").mkdir(exist_ok=True)
    best = best_eval(history_of(records), by)
    path = run_dir / "report" / "losses.png"
    plot_losses(path, loss_curves(records), best, kept, by, score_curves(records))
    if any(r.get("group_norms") for r in records):
        plot_grad_norms(run_dir / "report" / "grad_norms.png", records)


VANISHING = 1e-7


def grad_warnings(
    step: int, norms: dict[str, float], threshold: float, vanishing: float = VANISHING
) -> list[str]:
    """Warnings for groups whose gradient norm vanished, exploded or is not finite."""
    out = []
    for group, norm in norms.items():
        if not math.isfinite(norm):
            out.append(f"step {step}: gradient norm of {group} is {norm} (non-finite)")
        elif norm > threshold:
            out.append(
                f"step {step}: gradient norm of {group} is {norm:.3g} > {threshold:g} (exploding)"
            )
        elif norm < vanishing:
            out.append(
                f"step {step}: gradient norm of {group} is {norm:.3g} < {vanishing:g} (vanishing)"
            )
    return out


def grad_summary(records: list[dict[str, Any]]) -> list[tuple[str, float, float, float, float]]:
    """(group, first, last, min, max) gradient norm per group over the logged steps."""
    series: dict[str, list[float]] = {}
    for r in records:
        for group, norm in r.get("group_norms", {}).items():
            series.setdefault(group, []).append(norm)
    return [(g, v[0], v[-1], min(v), max(v)) for g, v in series.items()]
