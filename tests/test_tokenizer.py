from pathlib import Path

import pytest

from sentcli.errors import TokenizerError
from sentcli.tokenizer import (
    BOS_ID,
    EOS_ID,
    SPECIAL_TOKENS,
    encode,
    load_tokenizer,
    train_tokenizer,
)


def test_special_tokens_have_fixed_ids(tokenizer) -> None:
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == i


def test_save_load_round_trip_encodes_identically(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    tokenizer.save(str(path))
    again = load_tokenizer(path)
    text = "Stocks rally as oil prices fall"
    assert again.encode(text).ids == tokenizer.encode(text).ids


def test_encode_wraps_in_bos_eos_and_truncates_keeping_eos(tokenizer) -> None:
    (short,) = encode(tokenizer, ["oil"])
    assert short[0] == BOS_ID and short[-1] == EOS_ID
    (cut,) = encode(tokenizer, ["word " * 50], max_length=10)
    assert len(cut) == 10 and cut[0] == BOS_ID and cut[-1] == EOS_ID


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_other_kinds_train_with_the_same_specials(kind: str, texts: list[str]) -> None:
    tok = train_tokenizer([texts[:200]], kind, vocab_size=300)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]


def test_foreign_tokenizer_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    path = tmp_path / "foreign.json"
    Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    with pytest.raises(TokenizerError, match="not a sentcli tokenizer"):
        load_tokenizer(path)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "junk.json")
