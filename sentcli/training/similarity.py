"""The similarity objectives: their losses on sentence vectors and their metrics.

- scored pairs: CoSENT (every pair of pairs in the batch whose gold scores are ordered
  should have their cosines ordered the same way; the scale of the scores does not matter)
  or cosine-MSE (the cosine regresses onto the score mapped to 0..1);
- positive pairs and triplets: in-batch negatives (InfoNCE, as sentence-transformers'
  MultipleNegativesRankingLoss): each anchor's positive against every other positive (and
  hard negative) of the global batch;
- plain text: unsupervised SimCSE, the same text twice under two dropout masks as the
  positive pair, with in-batch negatives.

All sides of a batch go through the encoder in one forward pass. Under torchrun the
in-batch candidates are the global batch: the ranks' vectors are gathered with their
gradient, so N processes train like one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from tokenizers import Tokenizer

from sentcli import dist
from sentcli.config import SimilarityLoss, TaskConfig, TaskKind
from sentcli.data.batching import column_array, encode_rows
from sentcli.data.pairs import SIDES, pair_table, shape_of
from sentcli.errors import ConfigError, DataError
from sentcli.inference.embed import apply_batched, vector_fn


def cosent(cos: torch.Tensor, scores: torch.Tensor, scale: float) -> torch.Tensor:
    """log(1 + Σ exp(scale · (cos_j − cos_i))) over the pairs i, j with score_i > score_j."""
    diff = scale * (cos[None, :] - cos[:, None])  # [B, B]: cos_j - cos_i
    ordered = scores[:, None] > scores[None, :]  # pair i should be above pair j
    diff = diff.masked_fill(~ordered, float("-inf"))
    zero = torch.zeros(1, device=cos.device, dtype=diff.dtype)
    return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)


def cosine_mse(cos: torch.Tensor, scores: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return F.mse_loss(cos, (scores - low) / (high - low))


def _global(t: torch.Tensor, n: int, ranks: dist.Dist) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Every rank's rows of a global batch of `n` rows (strided shards, padded to one size):
    (the rows [world · m, C], where this rank's block starts, which rows are padding)."""
    if not ranks.on:
        return t, 0, torch.zeros(len(t), dtype=torch.bool, device=t.device)
    m = -(-n // ranks.world)
    sizes = [len(range(r, n, ranks.world)) for r in range(ranks.world)]
    padded = F.pad(t, (0, 0, 0, m - len(t))).contiguous()
    # all_gather with autograd: its backward sums each rank's gradient into the rank that
    # owns the rows, so N processes train like one process with the global batch
    parts = dist_nn.all_gather(padded)  # type: ignore[no-untyped-call]
    pad = torch.tensor([i >= s for s in sizes for i in range(m)], device=t.device)
    return torch.cat(parts), ranks.rank * m, pad


def info_nce(
    anchors: torch.Tensor,
    candidates: list[torch.Tensor],
    scale: float,
    n: int,
    ranks: dist.Dist,
) -> torch.Tensor:
    """Cross-entropy of each anchor's own positive (candidates[0][i]) among every candidate
    of the global batch of `n` rows (positives, then hard negatives), on scaled cosines."""
    gathered, pads, start = [], [], 0
    for j, c in enumerate(candidates):
        g, block_start, pad = _global(F.normalize(c.float(), dim=-1), n, ranks)  # fp32: gloo
        start = block_start if j == 0 else start  # the positives come first
        gathered.append(g)
        pads.append(pad)
    cands = torch.cat(gathered)  # [K, C]
    sims = scale * F.normalize(anchors.float(), dim=-1) @ cands.T  # [B, K]
    sims = sims.masked_fill(torch.cat(pads)[None, :], float("-inf"))
    target = torch.arange(len(anchors), device=anchors.device) + start
    return F.cross_entropy(sims.float(), target)


def pair_loss(
    kind: TaskKind,
    sides: list[torch.Tensor],
    target: torch.Tensor | None,
    loss: SimilarityLoss,
    scale: float,
    score_range: list[float],
    n: int,
    ranks: dist.Dist,
) -> torch.Tensor:
    """The loss of one similarity batch from its sides' sentence vectors."""
    if kind == TaskKind.scored:
        assert target is not None
        cos = F.cosine_similarity(sides[0].float(), sides[1].float(), dim=-1)
        if loss == SimilarityLoss.cosent:
            return cosent(cos, target, scale)
        return cosine_mse(cos, target, *score_range)
    return info_nce(sides[0], sides[1:], scale, n, ranks)


def _ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks; tied values share their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return np.asarray(np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's of the ranks."""
    return pearson(_ranks(x), _ranks(y))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((a * b).sum(axis=1))


def retrieval(anchors: np.ndarray, positives: np.ndarray, chunk: int = 1024) -> dict[str, float]:
    """Recall@1 and MRR of each anchor's positive among all the split's positives (cosine;
    ties count against it), in chunks of anchors: memory stays chunk × N."""
    a = anchors / np.maximum(np.linalg.norm(anchors, axis=1, keepdims=True), 1e-12)
    p = positives / np.maximum(np.linalg.norm(positives, axis=1, keepdims=True), 1e-12)
    ranks = []
    for start in range(0, len(a), chunk):
        sims = a[start : start + chunk] @ p.T  # [c, N]
        own = sims[np.arange(len(sims)), np.arange(start, start + len(sims))]
        ranks.append((sims >= own[:, None]).sum(axis=1))  # itself included: ties count against
    r = np.concatenate(ranks)
    return {"recall@1": float(np.mean(r == 1)), "mrr": float(np.mean(1.0 / r))}


def pair_metrics(
    kind: TaskKind, sides: list[np.ndarray], target: np.ndarray | None
) -> dict[str, Any]:
    """The validation (or test) scores of a similarity task from its sides' vectors."""
    if kind == TaskKind.scored:
        assert target is not None
        if np.ptp(target) == 0:
            raise DataError(
                f"every gold score of the split is {target[0]:g}: there is no ranking to score "
                "against (an unlabelled test split?); give pairs with their scores"
            )
        cos = cosines(sides[0], sides[1])
        return {"spearman": spearman(cos, target), "pearson": pearson(cos, target)}
    if kind == TaskKind.pairs:
        return retrieval(sides[0], sides[1])
    return {}


def evaluate_pairs(
    model: torch.nn.Module,
    tok: Tokenizer,
    spec: TaskConfig,
    block: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    no_head: str,
) -> tuple[str, dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Score any run that embeds on a similarity source: its test split, else validation,
    else all its rows. Returns the split, the metrics and (scored pairs) each pair's cosine
    and gold score. `no_head`: the message for a source of labelled texts."""
    shape, splits, _ = shape_of(spec)
    if shape.kind == TaskKind.classification:
        raise ConfigError(no_head)  # labelled texts need the task's head
    if shape.kind == TaskKind.text:
        raise ConfigError(
            f"{spec.source} holds plain text: there is nothing to score it against; give "
            "scored pairs (sentence1, sentence2, score) or positive pairs"
        )
    split = next(s for s in ("test", "validation", "train") if s in splits)
    ds = pair_table(splits[split], shape, f"{spec.source} ({split})")
    model.eval()
    embed = vector_fn(model, normalize=False)  # type: ignore[arg-type]
    sides = [
        apply_batched(embed, encode_rows(tok, ds, block, c), batch_size, device, dtype)
        for c in SIDES[: len(shape.pair_columns)]
    ]
    scored = shape.kind == TaskKind.scored
    target = column_array(ds, "score", np.float64) if scored else None
    metrics = {"kind": str(shape.kind), "pairs": len(ds), **pair_metrics(shape.kind, sides, target)}
    cos = cosines(sides[0], sides[1]) if target is not None else None
    return split, metrics, cos, target
