"""Batching: length-grouped batches (capped in tokens), right padding with a mask, and
packed language-model blocks."""

import numpy as np

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
