"""scripts/student.py: the default model's distillation corpus, and a student cut from an
imported BERT (its blocks and vocabulary), which must compute exactly what the teacher's
kept blocks compute wherever its vocabulary still covers the text."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import WordPieceTrainer

from scripts import student
from sentcli import api
from sentcli.checkpoint import load_run
from sentcli.config import InferenceOptions

from helpers import DATA, make_bert

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece(lines: list[str], vocab_size: int) -> Tokenizer:
    """A BERT-style uncased WordPiece tokenizer trained on `lines`."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(lines, WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """../shared/data's layout, made of the shipped samples."""
    root = tmp_path_factory.mktemp("shared")
    for name in ("ag_news", "imdb", "stsb"):
        shutil.copytree(DATA / name, root / name)
    shutil.copyfile(DATA / "imdb_unsup" / "train.txt.gz", root / "imdb" / "unsup.txt.gz")
    return root


def test_corpus_holds_every_short_text_and_fills_up_with_review_sentences(
    shared: Path, tmp_path: Path
) -> None:
    short = set(student._rows(shared / "stsb" / "train.csv.gz", "sentence1", "sentence2"))
    short |= set(student._rows(shared / "ag_news" / "train.csv.gz", "text"))
    short = {" ".join(s.split()) for s in short} - {""}
    lines, total = student.sentences(shared, len(short) + 2000)
    assert len(lines) == len(set(lines)) == len(short) + 2000 < total
    assert short <= set(lines)
    assert all(len(s.split()) >= 4 and "<br />" not in s for s in set(lines) - short)
    assert student.sentences(shared, len(short) + 2000) == (lines, total)  # seeded
    student.corpus(shared, tmp_path / "c" / "train.txt", 0)
    assert len((tmp_path / "c" / "train.txt").read_text().splitlines()) == total


def test_shrunk_student_is_the_teachers_kept_blocks(shared: Path, tmp_path: Path) -> None:
    with gzip.open(shared / "imdb" / "unsup.txt.gz", "rt", encoding="utf-8") as f:
        reviews = [line.strip() for line in f][:300]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(reviews) + "\n")
    tok = wordpiece(reviews, 600)
    api.import_hf(make_bert(tmp_path / "bert", tok), tmp_path / "teacher")
    full = tok.get_vocab_size()
    student.shrink(tmp_path / "teacher", tmp_path / "cut", [1], full, corpus)  # vocab kept
    student.shrink(tmp_path / "teacher", tmp_path / "small", [1], 300, corpus)

    config, _, small_tok, _ = load_run(tmp_path / "small")  # strict: weights match config
    assert (config.model.n_layer, config.model.vocab_size) == (1, 300)
    assert small_tok.get_vocab_size() == 300 and small_tok.token_to_id("[PAD]") == 0
    kept = set(small_tok.get_vocab())
    assert {"[UNK]", "[CLS]", "[SEP]"} <= kept
    # No text gets an [UNK] it did not have: every single character survives.
    assert all(small_tok.encode(r).tokens.count("[UNK]") == 0 for r in reviews)
    # Where the small vocabulary still covers a text, both tokenize it alike, and the small
    # student's vector is the cut teacher's (the same rows of the same embedding matrix).
    snippets = [" ".join(r.split()[:4]) for r in reviews]
    covered = [r for r in snippets if set(tok.encode(r).tokens) <= kept][:20]
    assert len(covered) >= 5
    assert all(small_tok.encode(r).tokens == tok.encode(r).tokens for r in covered)
    (tmp_path / "in.txt").write_text("\n".join(covered) + "\n", encoding="utf-8")
    options = InferenceOptions(device="cpu", precision="fp32")
    for run in ("cut", "small"):
        out = tmp_path / f"{run}.npy"
        api.embed(str(tmp_path / "in.txt"), out, tmp_path / run, options=options)
    a, b = np.load(tmp_path / "cut.npy"), np.load(tmp_path / "small.npy")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    with pytest.raises(SystemExit, match="specials and characters"):
        student.shrink(tmp_path / "teacher", tmp_path / "tiny", [0], 10, corpus)
    with pytest.raises(SystemExit, match="--layers must name blocks 0..1"):
        student.shrink(tmp_path / "teacher", tmp_path / "bad", [2], 300, corpus)
