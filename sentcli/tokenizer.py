"""Build, load and apply subword tokenizers (HF `tokenizers`) with fixed special tokens."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from sentcli.config import TokenizerKind, choices
from sentcli.errors import TokenizerError

# Fixed ids: every sentcli tokenizer has these five tokens first, in this order.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID = range(5)


@dataclass
class TokenizerSummary:
    vocab_size: int
    texts: int
    tokens: int
    unk_tokens: int

    @property
    def mean_tokens(self) -> float:
        return self.tokens / max(self.texts, 1)

    @property
    def unk_share(self) -> float:
        return self.unk_tokens / max(self.tokens, 1)


def new_tokenizer(
    kind: str, vocab_size: int, min_frequency: int, lowercase: bool
) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer of `kind` and its trainer."""
    specials = list(SPECIAL_TOKENS)
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    trainer: trainers.Trainer
    if kind == "bpe":
        # Byte-level BPE: every string is encodable, so [UNK] never occurs.
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            show_progress=False,
        )
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token="[UNK]", show_progress=False
        )
    else:
        raise TokenizerError(
            f"unknown tokenizer kind {kind!r}; use one of {choices(TokenizerKind)}"
        )
    tok.normalizer = normalizers.Sequence(norm)
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS_ID), ("[EOS]", EOS_ID)]
    )
    return tok, trainer


def train_tokenizer(
    batches: Iterable[list[str]],
    kind: str = "bpe",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = False,
) -> Tokenizer:
    """Train a tokenizer on batches of texts."""
    tok, trainer = new_tokenizer(kind, vocab_size, min_frequency, lowercase)
    tok.train_from_iterator(_flatten(batches), trainer=trainer)
    check_specials(tok, "the trained tokenizer")
    return tok


def _flatten(batches: Iterable[list[str]]) -> Iterator[str]:
    for batch in batches:
        yield from batch


def check_specials(tok: Tokenizer, where: str, pad_only: bool = False) -> None:
    """sentcli's five special tokens at their ids (with `pad_only`, just [PAD] at 0: all
    that inference and fine-tuning rely on)."""
    for expected_id, token in enumerate(SPECIAL_TOKENS[:1] if pad_only else SPECIAL_TOKENS):
        if tok.token_to_id(token) != expected_id:
            raise TokenizerError(
                f"{where} is not a sentcli tokenizer: {token} is not id {expected_id}; "
                "build one with `sentcli build-tokenizer`"
            )


def load_tokenizer(path: Path) -> Tokenizer:
    """Load a tokenizer.json file and check its special tokens."""
    if not path.is_file():
        raise TokenizerError(
            f"tokenizer file {path} not found; build one with `sentcli build-tokenizer`"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception for any parse error
        raise TokenizerError(
            f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0][:120]}); "
            "build one with `sentcli build-tokenizer`"
        ) from e
    check_specials(tok, str(path))
    return tok


def encode(tok: Tokenizer, texts: list[str], max_length: int | None = None) -> list[np.ndarray]:
    """Token ids for each text, `[BOS] … [EOS]`, cut to `max_length` (keeping [EOS])."""
    return encode_counting(tok, texts, max_length)[0]


def encode_counting(
    tok: Tokenizer, texts: list[str], max_length: int | None = None
) -> tuple[list[np.ndarray], int]:
    """`encode`, and how many texts were cut to `max_length`."""
    out = []
    cut = 0
    for enc in tok.encode_batch_fast(texts):  # parallel in Rust, no offsets computed
        ids = np.asarray(enc.ids, dtype=np.int32)
        if max_length is not None and len(ids) > max_length:
            ids = np.concatenate([ids[: max_length - 1], ids[-1:]])
            cut += 1
        out.append(ids)
    return out, cut
