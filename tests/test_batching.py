"""Batching: length-grouped batches (capped in tokens), right padding with a mask, and
packed language-model blocks."""

from typing import Any

import numpy as np
import torch

from sentcli.data import batching


def test_length_batches_cover_every_index_once_and_group_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=1000)
    batches = batching.length_batches(lengths, 16, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 20  # random batches would span ~90
    again = batching.length_batches(lengths, 16, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))


def test_length_batches_with_max_tokens_keep_every_padded_batch_under_the_cap() -> None:
    lengths = np.random.default_rng(0).integers(1, 300, size=1000)
    lengths[7] = 9000  # longer than the cap: goes alone
    batches = batching.length_batches(lengths, 128, max_tokens=8192)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert [b.tolist() for b in batches if lengths[b].max() > 8192] == [[7]]
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 8192
        assert len(b) <= 128
    # in length order, as without the cap, and short texts still fill whole batches
    flat = np.concatenate(batches)
    assert (np.diff(lengths[flat]) >= 0).all()
    assert len(batches[0]) == 128
    for b, after in zip(batches, batches[1:], strict=False):  # each takes all the rows that fit
        assert len(b) == 128 or (len(b) + 1) * lengths[after[0]] > 8192
    uncapped = batching.length_batches(lengths, 128)
    assert np.array_equal(np.concatenate(uncapped), flat)


def test_collate_pads_right_with_mask() -> None:
    ids, mask = batching.collate([np.array([5, 6, 7]), np.array([8])])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def test_pack_blocks_makes_every_token_a_target_once() -> None:
    stream = [np.arange(0, 10), np.arange(10, 23)]
    blocks = batching.pack_blocks(stream, 4)
    assert blocks.shape == (5, 5)
    assert blocks[:, 1:].ravel().tolist() == list(range(1, 21))


def dataset(texts: list[str], **columns: list[object]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"text": texts, **columns})


def test_text_batches_keep_or_drop_blank_texts() -> None:
    ds = dataset(["a", "", "  ", "b", "c"], other=["x", "y", "z", "w", "v"])
    assert list(batching.iter_text_batches(ds, 2)) == [["a"], ["b"], ["c"]]
    assert list(batching.iter_text_batches(ds, 2, skip_empty=False)) == [
        ["a", ""], ["  ", "b"], ["c"]
    ]  # fmt: skip
    assert list(batching.iter_text_batches(ds, 10, column="other")) == [["x", "y", "z", "w", "v"]]
    assert list(batching.iter_text_batches(dataset(["", " "]))) == []  # no empty batch


def test_shuffled_batches_are_a_seeded_permutation_per_epoch() -> None:
    a = batching.shuffled_batches(10, 4, 1, 0)
    assert [len(b) for b in a] == [4, 4, 2]
    assert sorted(np.concatenate(a).tolist()) == list(range(10))
    again = batching.shuffled_batches(10, 4, 1, 0)
    assert all(np.array_equal(x, y) for x, y in zip(a, again, strict=True))
    other_epoch = np.concatenate(batching.shuffled_batches(10, 4, 1, 1))
    other_seed = np.concatenate(batching.shuffled_batches(10, 4, 2, 0))
    assert not np.array_equal(np.concatenate(a), other_epoch)
    assert not np.array_equal(np.concatenate(a), other_seed)
    assert np.array_equal(np.concatenate(a), np.random.default_rng([1, 0]).permutation(10))


def test_length_batches_shuffle_within_windows_then_the_batch_order() -> None:
    """With an rng: every index once, batch_size rows (the last fewer), lengths sorted inside
    each batch, and the batches in a shuffled order (not by length)."""
    lengths = np.random.default_rng(3).integers(1, 500, size=2000)
    batches = batching.length_batches(lengths, 8, np.random.default_rng(5))
    assert sorted(np.concatenate(batches).tolist()) == list(range(2000))
    assert sorted(len(b) for b in batches) == [8] * 250
    assert all((np.diff(lengths[b]) >= 0).all() for b in batches)
    firsts = [lengths[b[0]] for b in batches]
    assert not (np.diff(firsts) >= 0).all()  # not sorted across batches
    plain = batching.length_batches(lengths, 8)  # evaluation: sorted, in order
    flat = np.concatenate(plain)
    assert (np.diff(lengths[flat]) >= 0).all() and [len(b) for b in plain] == [8] * 250


def test_capped_batches_take_every_row_that_fits() -> None:
    order = np.arange(6)
    lengths = np.array([2, 2, 3, 5, 5, 9])
    got = batching._capped(order, lengths, 4, 10)
    # 4 rows of ≤3 tokens would be 12 > 10: three rows (9); then 5, 5 (10); then 9 alone
    assert [b.tolist() for b in got] == [[0, 1, 2], [3, 4], [5]]
    assert [b.tolist() for b in batching._capped(order, lengths, 2, 100)] == [
        [0, 1],
        [2, 3],
        [4, 5],
    ]
    assert [b.tolist() for b in batching._capped(order[:1], np.array([50]), 4, 10)] == [[0]]


def test_collate_of_one_and_of_equal_lengths() -> None:
    ids, mask = batching.collate([np.array([9, 8])])
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert ids.tolist() == [[9, 8]] and mask.tolist() == [[True, True]]
    ids, mask = batching.collate([np.array([1, 2]), np.array([3, 4])])
    assert ids.tolist() == [[1, 2], [3, 4]] and mask.all()


def test_column_array_and_encode_rows_keep_every_row(tokenizer: Any) -> None:
    from sentcli.tokenizer import encode

    ds = dataset(["one two", "", "three"], label=[2, 0, 1], score=[0.5, 1.5, 2.5])
    labels = batching.column_array(ds, "label", np.int64)
    assert labels.dtype == np.int64 and labels.tolist() == [2, 0, 1]
    assert batching.column_array(ds, "score", np.float32).tolist() == [0.5, 1.5, 2.5]
    rows = batching.encode_rows(tokenizer, ds, 4)
    want = encode(tokenizer, ["one two", "", "three"], 4)
    assert len(rows) == 3 and all(np.array_equal(a, b) for a, b in zip(rows, want, strict=True))
    assert max(len(r) for r in rows) <= 4
    other = batching.encode_rows(tokenizer, ds.rename_column("text", "a"), 16, column="a")
    assert all(
        np.array_equal(a, b)
        for a, b in zip(other, encode(tokenizer, ["one two", "", "three"], 16), strict=True)
    )


def test_pack_texts_and_too_little_text(tokenizer: Any) -> None:
    import pytest

    from sentcli.errors import DataError
    from sentcli.tokenizer import encode

    ds = dataset(["the quick brown fox jumps over the lazy dog"] * 3 + [""])
    blocks = batching.pack_texts(tokenizer, [ds], 5, "training")
    stream = np.concatenate(encode(tokenizer, ["the quick brown fox jumps over the lazy dog"] * 3))
    n = (len(stream) - 1) // 5
    assert blocks.shape == (n, 6)
    assert np.array_equal(blocks, np.stack([stream[i * 5 : i * 5 + 6] for i in range(n)]))
    with pytest.raises(
        DataError, match="the validation texts give 3 tokens, fewer than one block of 6"
    ):
        batching.pack_texts(tokenizer, [dataset(["a"])], 5, "validation")
    assert batching.pack_blocks([], 4).shape == (0, 5)
    assert batching.pack_blocks([np.arange(4)], 4).shape == (0, 5)  # 4 tokens: no window of 5


GOLDEN = "9b5aa67f6afe403c"
"""sha256 (first 16 hex digits) of the batches below, as sentcli draws them."""


def test_length_batches_are_the_same_for_the_same_seed_as_in_earlier_versions() -> None:
    """The batches a seed gives are part of a run's result: a resumed run, or one rerun with
    the same seed, must see them again. These are the ones sentcli has drawn since the
    batching landed (a change here changes every training run's numbers)."""
    import hashlib

    lengths = np.random.default_rng(11).integers(1, 300, size=3000)
    batches = batching.length_batches(lengths, 16, np.random.default_rng([1337, 0]))
    digest = hashlib.sha256(np.concatenate(batches).astype(np.int64).tobytes()).hexdigest()
    assert [len(b) for b in batches[:3]] == [16, 16, 16] and len(batches) == 188
    assert digest[:16] == GOLDEN
    ties = np.array([3, 1, 3, 1, 3, 2])
    assert np.concatenate(batching.length_batches(ties, 4)).tolist() == [1, 3, 5, 0, 2, 4]


def test_capped_batches_put_each_too_long_text_alone() -> None:
    order, lengths = np.arange(3), np.array([40, 50, 60])
    assert [b.tolist() for b in batching._capped(order, lengths, 8, 10)] == [[0], [1], [2]]


def test_column_dtypes_and_block_counts() -> None:
    ds = dataset(["a"], score=[1.5])
    assert batching.column_array(ds, "score", np.float32).dtype == np.float32
    assert batching.pack_blocks([np.arange(9)], 4).shape == (2, 5)  # 8 targets: two blocks
    assert batching.pack_blocks([np.arange(5)], 4).tolist() == [[0, 1, 2, 3, 4]]  # exactly one
    empty = batching.pack_blocks([], 4)
    assert empty.shape == (0, 5) and empty.dtype == np.int32


def test_token_buckets_cut_one_shape_per_bucket_and_use_all_but_the_last_leftovers() -> None:
    """--batch-tokens 256, block 128: buckets 8/16/32/64/128 of 32/16/8/4/2 rows. Every batch
    is full, pads to its bucket (a text never to less than its length), the shapes are the
    buckets' and nothing but the last bucket's leftovers (< 2 rows) sits out."""
    buckets = batching.TokenBuckets(256, 128)
    assert buckets.sizes == [8, 16, 32, 64, 128]
    assert [buckets.rows(s) for s in buckets.sizes] == [32, 16, 8, 4, 2]
    widths = np.random.default_rng(0).integers(1, 129, size=1001)
    batches = buckets.batches(widths, np.random.default_rng(1))
    shapes = set()
    for b in batches:
        width = buckets.width(len(b), int(widths[b].max()))
        assert width >= widths[b].max() and len(b) * width <= 256
        shapes.add((len(b), width))
    assert shapes <= {(buckets.rows(s), s) for s in buckets.sizes}
    used = np.concatenate(batches)
    assert len(set(used.tolist())) == len(used) and len(widths) - len(used) < 2
    again = buckets.batches(widths, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))
    # under two processes, rows come in pairs; a pair of texts counts twice
    pairs = batching.TokenBuckets(256, 128, per_row=2, multiple=2)
    assert [pairs.rows(s) for s in pairs.sizes] == [16, 8, 4, 2, 2]
    assert batching.TokenBuckets(24, 128).rows(8) == 3  # one process: any row count


def test_collate_pads_to_a_given_width() -> None:
    ids, mask = batching.collate([np.array([5, 6]), np.array([7])], width=8)
    assert ids.shape == mask.shape == (2, 8)
    assert mask.sum(1).tolist() == [2, 1]
    assert batching.collate([np.array([], dtype=np.int64)])[0].shape == (1, 0)  # no width
