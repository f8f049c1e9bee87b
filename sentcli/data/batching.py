"""Batching: texts in batches, token ids → padded tensors, length-bucketed and shuffled
index batches, and pretraining's packed blocks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from tokenizers import Tokenizer

from sentcli.errors import DataError
from sentcli.tokenizer import PAD_ID, encode

if TYPE_CHECKING:
    from datasets import Dataset


def iter_text_batches(
    ds: Dataset, batch_size: int = 1000, skip_empty: bool = True, column: str = "text"
) -> Iterator[list[str]]:
    """The texts of a dataset's `column` in batches; `skip_empty` drops blank ones (right
    for tokenizers and pretraining, wrong where rows must stay aligned with labels)."""
    for start in range(0, len(ds), batch_size):
        batch = ds[start : start + batch_size][column]
        if skip_empty:
            batch = [t for t in batch if t and not t.isspace()]
        if batch:
            yield batch


def length_batches(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    max_tokens: int | None = None,
) -> list[np.ndarray]:
    """Index batches of similar length, so little padding is computed.

    With `rng`: shuffle, sort by length within windows of 50 batches, shuffle the batch order
    (random but length-homogeneous). Without: sorted by length (evaluation), and with
    `max_tokens` no batch pads to more than that many tokens (a longer text goes alone).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        if max_tokens is not None:
            return _capped(order, lengths[order], batch_size, max_tokens)
    else:
        order = rng.permutation(len(lengths))
        window = batch_size * 50
        order = np.concatenate(
            [
                chunk[np.argsort(lengths[chunk], kind="stable")]
                for chunk in np.array_split(order, max(1, -(-len(order) // window)))
            ]
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _capped(
    order: np.ndarray, sorted_lengths: np.ndarray, batch_size: int, max_tokens: int
) -> list[np.ndarray]:
    """`order` (ascending by length) cut into batches of ≤ batch_size rows whose padded size
    (rows × longest) stays ≤ max_tokens: each batch takes the most rows that fit."""
    batches, start = [], 0
    while start < len(order):
        window = sorted_lengths[start : start + batch_size]
        # k rows pad to k × window[k-1] tokens, which grows with k: count the k that fit
        fits = np.arange(1, len(window) + 1) * window <= max_tokens
        end = start + max(1, int(fits.sum()))
        batches.append(order[start:end])
        start = end
    return batches


class TokenBuckets:
    """Fixed-shape batches (--batch-tokens): every text is padded to the smallest bucket
    length that holds it (8, 16, 32, … up to the block size), and a batch of bucket L holds
    `rows(L)` texts, so an epoch has one shape per bucket and a CUDA graph can capture each.
    Texts left over in a bucket join the next longer one; the last bucket's leftovers (fewer
    than one batch) sit the epoch out (a different few each epoch: the order is shuffled).
    `per_row`: texts a row puts in the batch (each side of a pair, each SimCSE view);
    `multiple`: rows come in multiples of it (the processes under torchrun)."""

    def __init__(self, max_tokens: int, block: int, per_row: int = 1, multiple: int = 1) -> None:
        self.sizes = [s for s in (8 << k for k in range(16)) if s < block] + [block]
        self.max_tokens, self.per_row, self.multiple = max_tokens, per_row, multiple

    def rows(self, size: int) -> int:
        """Rows of a batch padded to `size` tokens."""
        n = self.max_tokens // (size * self.per_row) // self.multiple * self.multiple
        return max(self.multiple, n)

    def batches(self, widths: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """An epoch's index batches, shuffled; `widths`: each row's longest text in tokens."""
        bucket = np.searchsorted(self.sizes, widths)
        out: list[np.ndarray] = []
        carry = np.zeros(0, dtype=np.int64)
        for k, size in enumerate(self.sizes):
            rows = np.concatenate([carry, rng.permutation(np.flatnonzero(bucket == k))])
            n = self.rows(size)
            full = len(rows) // n * n
            out += [rows[i : i + n] for i in range(0, full, n)]
            carry = rows[full:]
        return [out[i] for i in rng.permutation(len(out))]

    def width(self, rows: int, longest: int) -> int:
        """The padded length of a batch of `rows` rows whose longest text has `longest`
        tokens: the bucket it was cut for (leftovers that moved up pad to the longer one)."""
        return next(s for s in self.sizes if s >= longest and self.rows(s) == rows)


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def collate(seqs: list[np.ndarray], width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id arrays → (input_ids [B, T] int64, attention_mask [B, T] bool), to
    the longest array or to `width` when given (fixed shapes)."""
    width = max(width, max(len(s) for s in seqs))
    ids = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = True
    return torch.from_numpy(ids), torch.from_numpy(mask)


def column_array(ds: Dataset, column: str, dtype: type) -> np.ndarray:
    """A whole column as one array. `np.asarray(ds[column])` reads it row by row through
    datasets' formatter (0.57 s for 5,000 labels); a slice is one Arrow read (0.05 s)."""
    return np.asarray(ds.select_columns([column]).with_format("numpy")[:][column], dtype=dtype)


def encode_rows(
    tok: Tokenizer, ds: Dataset, max_length: int, column: str = "text"
) -> list[np.ndarray]:
    """Token ids of every row's `column` (blank texts included, so rows stay aligned with
    labels and with a pair's other side)."""
    batches = iter_text_batches(ds, 10_000, skip_empty=False, column=column)
    return [ids for batch in batches for ids in encode(tok, batch, max_length)]


def pack_blocks(token_arrays: list[np.ndarray], block_size: int) -> np.ndarray:
    """Concatenate texts into one stream and cut windows of block_size + 1 tokens.

    Windows step by block_size, so every token is a prediction target once. [N, block_size+1]
    """
    stream = np.concatenate(token_arrays) if token_arrays else np.zeros(0, dtype=np.int32)
    n = (len(stream) - 1) // block_size
    if n < 1:
        return np.zeros((0, block_size + 1), dtype=np.int32)
    windows = np.lib.stride_tricks.sliding_window_view(stream, block_size + 1)
    return np.ascontiguousarray(windows[: n * block_size : block_size])


def pack_texts(tok: Tokenizer, parts: list[Dataset], block_size: int, what: str) -> np.ndarray:
    arrays = [
        ids for ds in parts for batch in iter_text_batches(ds, 10_000) for ids in encode(tok, batch)
    ]
    blocks = pack_blocks(arrays, block_size)
    if len(blocks) == 0:
        n = sum(len(a) for a in arrays)
        raise DataError(
            f"the {what} texts give {n} tokens, fewer than one block of {block_size + 1}; "
            "give more text or a smaller --block-size"
        )
    return blocks
