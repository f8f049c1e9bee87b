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
