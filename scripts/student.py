"""The default model's starting point: a corpus of sentences that picks the student's
vocabulary (its most frequent tokens are kept), and a student cut from a teacher run: the
first steps of `make default-model`.

  python -m scripts.student corpus DATA OUT.txt [--max-sentences N]
      One text per line, deduplicated, shuffled with a fixed seed: both sides of the STS-B
      train pairs, the AG News train texts, then sentences (4 words or more) of the IMDB
      train and unlabelled reviews up to N lines in all. DATA holds ag_news/, imdb/, stsb/.
  python -m scripts.student shrink TEACHER OUT --layers 0,3,5 --vocab-size 5120 --corpus F
      A run of the teacher's blocks LAYERS only, and of its WordPiece vocabulary the
      specials, every single character and then the most frequent tokens of corpus F,
      VOCAB in all (the embedding rows kept, renumbered). Words whose pieces were dropped
      are split into smaller pieces that remain: nothing becomes [UNK] that was not.

Keeping the first and last blocks of all-MiniLM-L6-v2 holds most of its quality (STS-B
validation, untrained: all six 86.7; blocks 0,3,5 84.2; 0,2,4 73.8; 0,1,2 63.0; 0,5 80.2).
Blocks 0,3,5 with 5,120 tokens (88 % of the corpus' tokens) read 80.2: 7.4M parameters,
14.8 MB in fp16, under the default model's 15 MB.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import gzip
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer

from sentcli import checkpoint as ckpt

SEED = 1337


def _rows(path: Path, *columns: str) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            yield from (row[c] for c in columns)


def _one_line(text: str) -> str:
    """Runs of whitespace as one space: a text may hold newlines, tabs or IMDB's U+0085,
    and every one must stay one line of the corpus file."""
    return " ".join(text.split())


def sentences(data: Path, max_sentences: int) -> tuple[list[str], int]:
    """The corpus' sentences, deduplicated, in a seeded random order: all of STS-B train and
    AG News train, then review sentences up to `max_sentences` in all (0: every one); and
    how many there were before the cut."""
    reviews = list(_rows(data / "imdb" / "train.csv.gz", "text"))
    with gzip.open(data / "imdb" / "unsup.txt.gz", "rt", encoding="utf-8") as f:
        reviews += [line.rstrip("\n") for line in f]
    short = {
        _one_line(s)
        for s in [
            *_rows(data / "stsb" / "train.csv.gz", "sentence1", "sentence2"),
            *_rows(data / "ag_news" / "train.csv.gz", "text"),
        ]
    }
    split = {
        _one_line(s)
        for text in reviews
        for s in re.split(r"(?<=[.!?])\s+", text.replace("<br />", " "))
        if len(s.split()) >= 4
    } - short
    rng = random.Random(SEED)
    found = sorted(split)  # sorted: a set's order varies between runs
    rng.shuffle(found)
    room = max(0, max_sentences - len(short)) if max_sentences else len(found)
    lines = sorted(short - {""}) + found[:room]
    rng.shuffle(lines)
    return lines, len(short) + len(found)


def corpus(data: Path, out: Path, max_sentences: int) -> None:
    lines, total = sentences(data, max_sentences)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(lines):,} sentences (of {total:,})")


def _keep_ids(tok: Tokenizer, lines: list[str], vocab_size: int) -> tuple[list[int], float]:
    """Token ids to keep (sorted) and the share of the corpus' tokens they cover."""
    count: collections.Counter[int] = collections.Counter()
    for start in range(0, len(lines), 4096):
        for enc in tok.encode_batch(lines[start : start + 4096], add_special_tokens=False):
            count.update(enc.ids)
    vocab = tok.get_vocab()
    specials = {t.content for t in tok.get_added_tokens_decoder().values()}
    keep = {vocab[s] for s in specials}
    keep |= {i for s, i in vocab.items() if len(s.removeprefix("##")) == 1}
    if len(keep) > vocab_size:
        raise SystemExit(f"--vocab-size {vocab_size} < the {len(keep)} specials and characters")
    for i, _ in count.most_common():
        if len(keep) == vocab_size:
            break
        keep.add(i)
    covered = sum(count[i] for i in keep) / max(1, sum(count.values()))
    return sorted(keep), covered


def pruned_tokenizer(tok: Tokenizer, keep: list[int]) -> Tokenizer:
    """The same tokenizer with only the `keep` ids, renumbered 0.. in their old order."""
    new_id = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tok.to_str())
    if spec["model"]["type"] != "WordPiece":
        raise SystemExit(f"the teacher's tokenizer is {spec['model']['type']}, not WordPiece")
    vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = {s: new_id[i] for s, i in vocab.items() if i in new_id}
    for added in spec["added_tokens"]:
        added["id"] = new_id[added["id"]]
    for special in (spec.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    return Tokenizer.from_str(json.dumps(spec))


def shrink(teacher: Path, out: Path, layers: list[int], vocab_size: int, corpus_file: Path) -> None:
    config, net, tok, _ = ckpt.load_run(teacher)
    if not layers or any(not 0 <= i < config.model.n_layer for i in layers):
        raise SystemExit(f"--layers must name blocks 0..{config.model.n_layer - 1}")
    lines = corpus_file.read_text(encoding="utf-8").splitlines()
    keep, covered = _keep_ids(tok, lines, vocab_size)
    model = dataclasses.replace(config.model, n_layer=len(layers), vocab_size=len(keep))
    student_config = dataclasses.replace(config, model=model)
    weights = {}
    for name, value in net.state_dict().items():
        if ".h." in name:  # trunk.h.<i>.rest: keep the chosen blocks, renumbered
            prefix, rest = name.split(".h.", 1)
            i, tail = rest.split(".", 1)
            if int(i) in layers:
                weights[f"{prefix}.h.{layers.index(int(i))}.{tail}"] = value
        elif name.endswith("wte.weight"):
            weights[name] = value[torch.tensor(keep)]
        else:
            weights[name] = value
    student = ckpt.build_model(student_config)
    student.load_state_dict(weights, strict=True)
    out.mkdir(parents=True, exist_ok=False)
    ckpt.save_run(out, student_config, student, pruned_tokenizer(tok, keep), 0)
    n = sum(p.numel() for p in student.parameters())
    print(
        f"wrote {out}: blocks {layers} of {config.model.n_layer}, {len(keep):,} of "
        f"{config.model.vocab_size:,} tokens ({covered:.1%} of the corpus' tokens), "
        f"{n / 1e6:.2f}M parameters"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("data", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--max-sentences", type=int, default=0)
    s = sub.add_parser("shrink")
    s.add_argument("teacher", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--layers", required=True)
    s.add_argument("--vocab-size", type=int, required=True)
    s.add_argument("--corpus", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "corpus":
        corpus(args.data, args.out, args.max_sentences)
    else:
        layers = [int(i) for i in args.layers.split(",")]
        shrink(args.teacher, args.out, layers, args.vocab_size, args.corpus)


if __name__ == "__main__":
    main()
