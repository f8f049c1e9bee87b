"""The benchmarks' own inputs: bench/embed.py builds its sentcli run from a tokenizer it
trains on the shipped samples, so it keeps working whatever tokenizer the default model
ships (a WordPiece one since the all-MiniLM-L6-v2 student, which `load_tokenizer` refuses)."""

from pathlib import Path

import pytest

from bench import embed as bench_embed
from sentcli.checkpoint import load_run
from sentcli.errors import TokenizerError
from sentcli.inference.embed import DEFAULT_MODEL
from sentcli.tokenizer import SPECIAL_TOKENS, load_tokenizer


def test_bench_embed_run_builds_from_its_own_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError):  # why the bench cannot borrow the default's
        load_tokenizer(DEFAULT_MODEL / "tokenizer.json")
    tok_path = bench_embed.sample_tokenizer(tmp_path / "tokenizer.json")
    tok = load_tokenizer(tok_path)
    assert tok.get_vocab_size() == 8000
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    run = bench_embed.sentcli_run(tmp_path / "run", tok_path)
    config, _, _, _ = load_run(run)
    assert (config.model.n_layer, config.model.n_embd, config.model.n_head) == (6, 384, 12)
    assert config.model.vocab_size == 8000


def test_flat_b1_ranks_by_the_codes_and_returns_the_float_top_k_of_its_candidates() -> None:
    import numpy as np

    from bench.ann import exact_top, flat_b1

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((300, 32)).astype(np.float32) + 0.5  # not centred on 0
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[:20] + 0.1 * rng.standard_normal((20, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # every row a candidate: the exact float top-k, in its order
    assert np.array_equal(flat_b1(corpus, queries, 5, 60), exact_top(corpus, queries, 5))
    # rescore 1: the first k by Hamming distance about the corpus mean, in float order
    center = corpus.mean(axis=0)
    ham = (np.where(queries > center, 1, -1) @ np.where(corpus > center, 1, -1).T).astype(float)
    got = flat_b1(corpus, queries, 5, 1)
    for q in range(20):
        assert sorted(got[q]) == sorted(np.argsort(-ham[q], kind="stable")[:5])
        cos = corpus[got[q]] @ queries[q]
        assert np.all(np.diff(cos) <= 0)
