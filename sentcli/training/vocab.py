"""Training a subword tokenizer on the texts of some sources (build-tokenizer), and what
its vocabulary does to them (tokens per text, unknown tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sentcli import checkpoint as ckpt
from sentcli import files
from sentcli.config import TokenizerKind, choices
from sentcli.data.batching import iter_text_batches
from sentcli.data.tasks import load_texts
from sentcli.errors import ConfigError, DataError
from sentcli.events import OnEvent, TextsRead
from sentcli.tokenizer import UNK_ID, TokenizerSummary, encode, train_tokenizer


def build_tokenizer(
    data: list[str],
    output: Path,
    kind: str,
    vocab_size: int,
    min_frequency: int,
    lowercase: bool,
    text_column: str | None,
    on_event: OnEvent,
    overwrite: bool,
) -> TokenizerSummary:
    """Train a tokenizer on the texts of `data` and write it to `output` (tokenizer.json;
    replacing a run folder's own tokenizer needs `overwrite`)."""
    if kind not in {k.value for k in TokenizerKind}:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; use one of {choices(TokenizerKind)}")
    if vocab_size < 64:
        raise ConfigError(f"--vocab-size {vocab_size} is too small; use at least 64")
    if min_frequency < 1:
        raise ConfigError(f"--min-frequency must be at least 1 (got {min_frequency})")
    if not output.parent.is_dir():
        raise ConfigError(f"output folder {output.parent} does not exist; create it first")
    if output.is_dir():
        raise ConfigError(f"-o {output} is a folder; give the tokenizer's file name")
    for given in data:
        if output.exists() and Path(given).exists() and output.samefile(given):
            raise ConfigError(f"-o {output} is an input of the tokenizer; write it elsewhere")
    in_run = output.name == ckpt.TOKENIZER and all(
        (output.parent / n).is_file() for n in (ckpt.CONFIG, ckpt.WEIGHTS)
    )
    if output.exists() and in_run and not overwrite:
        raise ConfigError(
            f"-o {output} is the tokenizer of the run in {output.parent}, whose model was "
            "trained with it; write the new one elsewhere (--overwrite replaces it anyway)"
        )
    files.check_writable(output)
    sources = load_texts(data, text_column)

    def batches() -> Iterator[list[str]]:
        seen = 0
        for _, ds in sources:
            for batch in iter_text_batches(ds):
                seen += len(batch)
                if on_event:
                    on_event(TextsRead(seen))
                yield batch

    tok = train_tokenizer(batches(), kind, vocab_size, min_frequency, lowercase)
    texts = tokens = unk = 0
    for _, ds in sources:
        for batch in iter_text_batches(ds, 10_000):
            for ids in encode(tok, batch):
                texts += 1
                tokens += len(ids) - 2  # [BOS] and [EOS] are not the text's tokens
                unk += int(np.count_nonzero(ids == UNK_ID))
    if texts == 0:
        raise DataError(f"no non-empty texts in {', '.join(data)}; give files with text")
    files.write_text(output, tok.to_str())
    return TokenizerSummary(tok.get_vocab_size(), texts, tokens, unk)
