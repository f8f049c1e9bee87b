"""Every command through Typer's CliRunner: exit codes, key output, files written."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sentcli import __version__
from sentcli.api import DEFAULT_MODEL
from sentcli.cli import app

from helpers import DATA, FAST, FAST_FLAGS, assert_refused, digests, read_rows, write_csv

runner = CliRunner()


def run(*args: str) -> object:
    return runner.invoke(app, [str(a) for a in args])


def test_version_and_help_show_examples() -> None:
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output
    assert "Example" in run("--help").output
    for command in (
        "build-tokenizer",
        "pretrain",
        "train-encoder",
        "train-mtl",
        "evaluate",
        "report",
        "embed",
        "predict",
        "similarity",
        "import-hf",
    ):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output, command


def test_python_dash_m_entry_point() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "sentcli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"sentcli {__version__}"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """build-tokenizer → pretrain → train-encoder through the CLI, on the shipped data."""
    root = tmp_path_factory.mktemp("cli")
    tok = root / "tok.json"
    result = run(
        "build-tokenizer", DATA / "imdb_unsup", "--vocab-size", "300", "-o", tok, "--quiet"
    )
    assert result.exit_code == 0, result.output
    assert (
        "vocab size" in result.output
        and "300" in result.output
        and "texts read          4,000" in result.output
    )
    result = run(
        "pretrain",
        DATA / "imdb_unsup",
        "--tokenizer",
        tok,
        "-o",
        root / "lm",
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        *FAST_FLAGS,
    )
    assert result.exit_code == 0, result.output
    assert "val ppl" in result.output and "done: 6 steps" in result.output
    return root


def test_pretrain_writes_a_run(pipeline: Path) -> None:
    assert {p.name for p in (pipeline / "lm").iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.jsonl",
        "train_state.pt",
        "report",
    }


def test_train_encoder_from_init_prints_test_results(pipeline: Path, topic_dir: Path) -> None:
    out = pipeline / "enc"
    result = run(
        "train-encoder",
        "--task",
        f"topic={topic_dir}",
        "--init",
        pipeline / "lm",
        "-o",
        out,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "loaded 28 trunk tensors" in result.output
    assert "topic test: accuracy" in result.output and "Sci/Tech" in result.output
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["test"]["topic"]["label_names"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert (out / "report" / "confusion_topic.png").is_file()


def test_existing_output_needs_overwrite_and_keeps_files(pipeline: Path, topic_dir: Path) -> None:
    before = (pipeline / "lm" / "model.safetensors").read_bytes()
    result = run(
        "pretrain",
        DATA / "imdb_unsup",
        "--tokenizer",
        pipeline / "tok.json",
        "-o",
        pipeline / "lm",
        *FAST_FLAGS,
    )
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (pipeline / "lm" / "model.safetensors").read_bytes() == before


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, pipeline: Path) -> Path:
    import gzip
    import shutil

    root = tmp_path_factory.mktemp("bad")
    (root / "string_sizes.json").write_text('{"batch_size": "64"}')
    (root / "notrain").mkdir()
    write_csv(root / "notrain" / "test.csv", [("a", 0), ("b", 1)])
    (root / "mixed.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": "pos"}\n')
    data = gzip.compress(("text,label\n" + "some text,1\n" * 2000).encode())
    (root / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    (root / "twolabels").mkdir()
    write_csv(root / "twolabels" / "train.csv", [("a", 0), ("b", 5), ("c", 1)])
    (root / "twolabels" / "labels.txt").write_text("neg\npos\n")
    (root / "duplabels").mkdir()
    write_csv(root / "duplabels" / "train.csv", [("a", 0), ("b", 1), ("c", 2)])
    (root / "duplabels" / "labels.txt").write_text("neg\npos\nneg\n")
    (root / "hugelabel").mkdir()
    write_csv(root / "hugelabel" / "train.csv", [("a", 0), ("b", 1_000_000_000), ("c", 1)])
    (root / "ragged.csv").write_text("text,label\nhello there,0\nbad row,1,extra\nok,1\n")
    (root / "short.csv").write_text("text,label\nhello there,0\nshort\nok,1\n")
    for name in ("corrupt", "newer", "swapped", "nostate", "nomodel", "badjson"):
        shutil.copytree(pipeline / "lm", root / name)
    (root / "corrupt" / "model.safetensors").write_bytes(b"\0" * 64)
    (root / "badjson" / "config.json").write_text('{"kind": "lm", ')
    (root / "hfjson").mkdir()
    (root / "hfjson" / "config.json").write_text("{not json")
    (root / "hfjson" / "model.safetensors").write_bytes(b"\0" * 64)
    (root / "nomodel" / "model.safetensors").unlink()
    config = json.loads((root / "newer" / "config.json").read_text())
    (root / "newer" / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    from sentcli.tokenizer import train_tokenizer

    train_tokenizer([["some words", "other words here"] * 50], vocab_size=280).save(
        str(root / "swapped" / "tokenizer.json")
    )
    (root / "empty.txt").write_text("")
    (root / "lines.png").write_text("a sentence\nanother one\n")  # text, named like an image
    np.save(root / "vectors.npy", np.ones((3, 4), dtype=np.float32))
    np.save(root / "ints.npy", np.ones((3, 4), dtype=np.int64))
    from sentcli.inference.vectors import Ranges, fingerprint

    Ranges.of(np.ones((2, 384), dtype=np.float32), "another model").save(root / "ranges.json")
    ones = [1.0] * 384  # the default model's, written before ranges held each dimension's mean
    Ranges(fingerprint(DEFAULT_MODEL), 384, 2, ones, ones).save(root / "old_ranges.json")
    (root / "tabs.txt").write_text("a\tb\tc\n")  # which tab splits the pair?
    (root / "latin1.csv").write_bytes("text,label\ncaf\xe9,0\n".encode("latin-1"))
    write_csv(root / "range.csv", [("a", 0), ("b", 1)])
    (root / "notarun").mkdir()
    (root / "foreign.json").write_text('{"version": "1.0", "model": {"type": "WordLevel"}}')
    (root / "ok.txt").write_text("hello\n")
    (root / "two.txt").write_text("hello\nworld\n")
    (root / "latin1.txt").write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    (root / "extra_key.json").write_text('{"batch_sise": 8}')
    (root / "notes.txt").write_text("batch_size = 8\n")
    write_csv(root / "one_class.csv", [("a", 0), ("b", 0)])
    write_csv(root / "notext.csv", [("a", 0), ("b", 1)], ("body", "label"))
    from sentcli import api

    topic = root / "topic"
    topic.mkdir()
    write_csv(topic / "train.csv", read_rows(DATA / "ag_news" / "train.csv.gz", 60))
    api.train_encoder(
        f"t={topic}",
        root / "enc",
        tokenizer=pipeline / "tok.json",
        options={**FAST, "max_steps": 1},
    )
    from tokenizers import Tokenizer, models

    word_level = models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]")
    Tokenizer(word_level).save(str(root / "wordlevel.json"))
    return root


def encoder_on(source: str) -> list[str]:
    """train-encoder from scratch on one task source (placeholders are filled per case)."""
    return ["train-encoder", "--task", "t=" + source, "--tokenizer", "{tok}", "-o", "{tmp}/e"]


MTL_AG = ["train-mtl", "--task", "t={data}/ag_news", "--tokenizer", "{tok}", "-o", "{tmp}/e"]
PRETRAIN = ["pretrain", "{data}/imdb_unsup", "--tokenizer", "{tok}", "-o", "{tmp}/lm"]

BAD_CASES = [
    (["build-tokenizer", "{bad}/missing.txt", "-o", "{tmp}/t.json"], "no such file"),
    (["build-tokenizer", "{bad}/empty.txt", "-o", "{tmp}/t.json"], "the file is empty"),
    (["build-tokenizer", "{bad}/latin1.csv", "-o", "{tmp}/t.json"], "not UTF-8"),
    (
        ["build-tokenizer", "{data}/ag_news", "--vocab-size", "10", "-o", "{tmp}/t.json"],
        "too small",
    ),
    (["build-tokenizer", "{data}/ag_news", "-o", "{tmp}/no/such/dir/t.json"], "does not exist"),
    (
        ["pretrain", "{data}/imdb_unsup", "--tokenizer", "{bad}/foreign.json", "-o", "{tmp}/lm"],
        "not a valid tokenizer.json",
    ),
    (
        ["pretrain", "{data}/imdb_unsup", "--tokenizer", "{bad}/wordlevel.json", "-o", "{tmp}/lm"],
        "[PAD] is not id 0",
    ),
    ([*PRETRAIN, "--batch-size", "0"], "batch_size must be at least 1"),
    ([*PRETRAIN, "--n-embd", "30", "--n-head", "4"], "divisible"),
    ([*PRETRAIN, "--embed-std", "nan"], "embed_std must be a finite number (got nan)"),
    ([*PRETRAIN, "--grad-clip", "nan"], "grad_clip must be a finite number (got nan)"),
    ([*PRETRAIN, "--max-time", "nan"], "max_time must be a finite number (got nan)"),
    ([*PRETRAIN, "--lr", "inf"], "lr must be a finite number (got inf)"),
    ([*PRETRAIN, "--weight-decay", "nan"], "weight_decay must be a finite number"),
    ([*PRETRAIN, "--seed", "-1"], "seed must be 0 or more (got -1)"),
    (
        [*PRETRAIN, "--config", "{bad}/string_sizes.json"],
        "batch_size must be an integer (got '64')",
    ),
    (
        [*PRETRAIN, "--device", "cuda"],
        "CUDA",
    ),
    (
        ["pretrain", "{data}/imdb_unsup", "--tokenizer", "{tok}", "-o", "{tmp}/lm", "--resume"],
        "cannot resume",
    ),
    (["train-encoder", "--task", "topic", "--tokenizer", "{tok}", "-o", "{tmp}/e"], "NAME=SOURCE"),
    (["train-encoder", "--task", "t={bad}/range.csv", "-o", "{tmp}/e"], "exactly one of --init"),
    (
        [
            "train-encoder",
            "--task",
            "t={bad}/range.csv",
            "--init",
            "{bad}/notarun",
            "-o",
            "{tmp}/e",
        ],
        "missing config.json",
    ),
    (
        [
            "train-encoder",
            "--task",
            "t={data}/ag_news",
            "--tokenizer",
            "{tok}",
            "--label-column",
            "stars",
            "-o",
            "{tmp}/e",
        ],
        "no label column 'stars'",
    ),
    (
        encoder_on("{bad}/latin1.csv"),
        "not UTF-8",
    ),
    (
        encoder_on("{bad}/notrain"),
        "train",
    ),
    (
        encoder_on("{bad}/mixed.jsonl"),
        "numbers and strings mixed",
    ),
    (
        encoder_on("{bad}/cut.csv.gz"),
        "truncated gzip",
    ),
    (
        encoder_on("{bad}/duplabels"),
        "'neg' named more than once",
    ),
    (
        encoder_on("{bad}/hugelabel"),
        "row 2 has label 1000000000: integer labels are class ids 0..K-1",
    ),
    (
        encoder_on("{bad}/twolabels"),
        "has label 5, outside 0..1",
    ),
    (
        ["train-encoder", "--task", "t={data}/ag_news", "--init", "{bad}/corrupt", "-o", "{tmp}/e"],
        "corrupt",
    ),
    (
        ["train-encoder", "--task", "t={data}/ag_news", "--init", "{bad}/newer", "-o", "{tmp}/e"],
        "newer",
    ),
    (
        ["train-encoder", "--task", "t={data}/ag_news", "--init", "{bad}/swapped", "-o", "{tmp}/e"],
        "tokenizer was replaced",
    ),
    (
        MTL_AG + ["--freeze", "layers:x"],
        "freeze",
    ),
    (
        MTL_AG + ["--freeze", "head:nope"],
        "nope",
    ),
    (["evaluate", "--model", "{bad}/corrupt"], "corrupt"),
    (["evaluate", "--model", "{bad}/notarun"], "missing config.json"),
    (["evaluate", "--model", "{bad}/nomodel"], "missing model.safetensors"),
    (
        encoder_on("{bad}/ragged.csv"),
        "Expected 2 fields in line 3",
    ),
    (
        encoder_on("{bad}/short.csv"),
        "row 2 has no label",
    ),
    (
        MTL_AG + ["--task-weight", "nope=2"],
        "unknown task(s) nope",
    ),
    (
        ["train-mtl", "--task", "a={data}/ag_news", "--task", "a={data}/imdb", "-o", "{tmp}/e"]
        + ["--tokenizer", "{tok}"],
        "give each task once",
    ),
    (["evaluate", "--model", "{default}", "--task", "nope={data}/ag_news"], "has no task nope"),
    (
        MTL_AG + ["--device", "cpu", "--precision", "fp16"],
        "fp16 needs a CUDA GPU",
    ),
    (
        MTL_AG + ["--skip-nonfinite", "-1"],
        "skip_nonfinite must be 0 or more",
    ),
    (
        MTL_AG + ["--batch-tokens", "-64"],
        "batch_tokens must be 0 or more",
    ),
    (
        ["pretrain", "{data}/imdb_unsup", "--tokenizer", "{tok}", "-o", "{lm}"],
        "--overwrite",
    ),
]
ENCODER = ["train-encoder", "--tokenizer", "{tok}", "-o", "{tmp}/e", "--task"]
TOPIC = [*ENCODER, "t={data}/ag_news"]
STS = [*ENCODER, "t={data}/stsb"]
SHELL = [  # usage: the same one line as sentcli's own errors (no boxed Typer panel)
    (["nope"], "No such command 'nope'"),
    (["trian-mtl"], "Did you mean 'train-mtl'?"),
    (["--bogus"], "No such option: --bogus"),
    ([*MTL_AG, "--bogus"], "No such option: --bogus (see sentcli train-mtl --help)"),
    (["build-tokenizer"], "Missing argument 'data'"),
    (["build-tokenizer", "{data}/ag_news", "--vocab-size", "abc", "-o", "{tmp}/t.json"],
     "Invalid value for '--vocab-size'"),
    (["build-tokenizer", "{data}/ag_news", "--kind", "nope", "-o", "{tmp}/t.json"],
     "'nope' is not one of 'bpe', 'wordpiece', 'unigram'"),
    ([*PRETRAIN, "--objective", "nope"], "'nope' is not one of 'clm', 'mlm'"),
    (["pretrain", "{data}/imdb_unsup", "--tokenizer", "{bad}/missing.json", "-o", "{tmp}/lm"],
     "Invalid value for '--tokenizer': file"),
    ([*TOPIC, "--freeze", "backbone"], "No such option: --freeze"),
    ([*STS, "--similarity-loss", "nope"], "'nope' is not one of 'cosent', 'cosine-mse'"),
    ([*MTL_AG, "--schedule", "nope"], "'nope' is not one of 'round-robin'"),
    ([*MTL_AG, "--balance", "nope"], "'nope' is not one of 'none', 'downsample'"),
    ([*MTL_AG, "--resume=maybe"], "'maybe' is not one of 'yes', 'auto'"),
    (["train-mtl", "--tokenizer", "{tok}", "-o", "{tmp}/e"], "give --task NAME=SOURCE once"),
    (["evaluate", "--model", "{bad}/ok.txt"], "is a file"),
    (["report", "{bad}/ok.txt"], "is a file"),
    (["report", "{lm}", "--bogus"], "No such option: --bogus"),
    (["embed", "{bad}/ok.txt", "--precision", "nope"], "'nope' is not one of 'auto'"),
    (["embed", "{bad}/ok.txt", "--device", "nope"], "'nope' is not one of 'auto', 'cpu'"),
    (["predict", "{bad}/ok.txt", "--task", "topic", "--format", "nope"],
     "'nope' is not one of 'tsv', 'jsonl'"),
    (["search", "{bad}/ok.txt", "--corpus", "{bad}/two.txt", "--format", "nope"],
     "'nope' is not one of 'tsv', 'jsonl'"),
    (["similarity", "{bad}/ok.txt", "{bad}/ok.txt", "--matrix", "{bad}/two.txt"],
     "--matrix FILE takes no pairs"),
]  # fmt: skip
UNWRITABLE = [  # outputs that cannot be written are refused before any work
    (["build-tokenizer", "{data}/ag_news", "-o", "/proc/t.json"], "cannot write /proc/t.json"),
    (["pretrain", "{data}/imdb_unsup", "--tokenizer", "{tok}", "-o", "/proc/lm"],
     "cannot write /proc/lm"),
    (["train-encoder", "--task", "t={data}/ag_news", "--tokenizer", "{tok}", "-o", "/sys/e"],
     "cannot write /sys/e: permission denied"),
    (["embed", "{bad}/ok.txt", "-o", "/proc/v.npy"], "cannot write /proc/v.npy"),
    (["predict", "{bad}/ok.txt", "--task", "topic", "-o", "/proc/p.tsv"], "cannot write"),
    (["search", "{bad}/ok.txt", "--corpus", "{bad}/two.txt", "-o", "/proc/x.tsv"],
     "cannot write /proc/x.tsv"),
    (["similarity", "--matrix", "{bad}/two.txt", "--plot", "/proc/x.png"],
     "cannot write /proc/x.png"),
    (["evaluate", "--task", "sts={data}/stsb", "--plots", "/proc/x"], "cannot write /proc/x"),
    (["build-tokenizer", "{data}/ag_news", "-o", "{tmp}"], "is a directory"),
]  # fmt: skip
VALUES = [  # values out of range, impossible combinations, data that does not fit
    (["build-tokenizer", "{data}/ag_news", "--min-frequency", "0", "-o", "{tmp}/t.json"],
     "--min-frequency must be at least 1"),
    (["build-tokenizer", "{bad}/notarun", "-o", "{tmp}/t.json"], "folder has no train.* file"),
    (["build-tokenizer", "{data}/ag_news", "--text-column", "body", "-o", "{tmp}/t.json"],
     "no text column 'body'; columns are text, label"),
    (["pretrain", "{bad}/empty.txt", "--tokenizer", "{tok}", "-o", "{tmp}/lm"],
     "the file is empty"),
    ([*PRETRAIN, "--block-size", "0"], "block_size must be at least 1"),
    ([*PRETRAIN, "--dropout", "1.5"], "dropout must be in [0, 1)"),
    ([*PRETRAIN, "--max-steps", "-1"], "max_steps must be 0 or more"),
    ([*PRETRAIN, "--lr", "0"], "lr must be positive"),
    ([*PRETRAIN, "--warmup", "-5"], "warmup must be 0 or more"),
    ([*PRETRAIN, "--eval-every", "-1"], "eval_every must be 0 or more"),
    ([*PRETRAIN, "--n-layer", "0"], "n_layer must be at least 1"),
    ([*PRETRAIN, "--val-fraction", "1.5"], "val_fraction must be in (0, 1)"),
    ([*PRETRAIN, "--config", "{bad}/notes.txt"], "cannot read config file"),
    ([*PRETRAIN, "--config", "{bad}/extra_key.json"], "unknown option(s) batch_sise"),
    ([*PRETRAIN, "--text-column", "body"], "no text column 'body'; columns are text"),
    (["pretrain", "{data}/ag_news", "--tokenizer", "{tok}", "-o", "{tmp}/lm", "--text-column",
      "label"], "column 'label' holds int64, not text"),
    (["pretrain", "{data}/imdb_unsup", "-o", "{enc}", "--resume"],
     "is a train-encoder run, not a pretrain one; continue it with sentcli train-encoder"),
    ([*ENCODER, "{long}={data}/ag_news"], "is 300 characters long; use at most 64"),
    ([*ENCODER, "a/b={data}/ag_news"], "task name 'a/b' must be letters, digits"),
    ([*ENCODER, "t={bad}/missing.csv"], "missing.csv: no such file or folder"),
    ([*ENCODER, "t={bad}/empty.txt"], "the file is empty"),
    ([*ENCODER, "t={bad}/notext.csv"], "no text column found (looked for text, sentence"),
    ([*ENCODER, "t={bad}/one_class.csv"], "only one label (0); a task needs at least two"),
    ([*TOPIC, "--init", "{lm}"], "give exactly one of --init RUN"),
    (["train-encoder", "--task", "t={data}/ag_news", "-o", "{lm}", "--resume"],
     "is a pretrain run, not a train-encoder one; continue it with sentcli pretrain --resume"),
    ([*STS, "--pair-columns", "sentence1"], "give two columns (a pair) or three"),
    ([*STS, "--score-column", "nope"], "no score column 'nope'"),
    ([*STS, "--teacher", "{bad}/notarun"], "--teacher: "),
    ([*STS, "--teacher", "{lm}"], "--teacher RUN distills on plain-text tasks"),
    (["train-encoder", "--task", "t={data}/ag_news", "--init", "{lm}", "--n-embd", "32", "-o",
      "{tmp}/e"], "--n-embd conflicts with the --init run's model"),
    ([*ENCODER, "t={data}/imdb_unsup", "--dropout", "0"], "its two views differ only by dropout"),
    ([*MTL_AG, "--temperature", "0"], "temperature must be positive"),
    ([*MTL_AG, "--task-weight", "t=abc"], "--task-weight 't=abc' is not NAME=W"),
    ([*MTL_AG, "--task-weight", "t=-1"], "task weight t=-1.0 must be positive"),
    ([*MTL_AG, "--unfreeze-every", "-1"], "unfreeze_every must be 0 or more"),
    ([*MTL_AG, "--text-column", "t=body"], "no text column 'body'"),
    ([*MTL_AG, "--text-column", "u=body"], "--text-column u=body: no task 'u'; tasks: t"),
    ([*MTL_AG, "--task", "s={data}/stsb", "--freeze", "head:s"], "invalid mode 'head:s'"),
    ([*MTL_AG, "--head-hidden", "-1"], "head_hidden must be 0 or more"),
    ([*MTL_AG, "--freeze", "layers:9"], "layers:K (K in 1..4)"),
    (["train-mtl", "--task", "t={data}/ag_news", "-o", "{lm}", "--resume"],
     "is a pretrain run, not a train-mtl one"),
    (["train-mtl", "--task", "t={data}/ag_news", "-o", "{enc}", "--resume", "auto"],
     "is a train-encoder run, not a train-mtl one"),
    (["evaluate", "--model", "{lm}"], "has no task heads"),
    (["evaluate", "--model", "{default}", "--task", "topic={bad}/latin1.txt"], "not UTF-8"),
    (["evaluate", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["evaluate", "--task", "sts={data}/stsb", "--pair-columns", "a,b"],
     "no pair column 'a'; columns are sentence1, sentence2, score, genre, year; pass "
     "--pair-columns with two of them"),
    (["evaluate", "--model", "{enc}", "--task", "t={bad}/empty.txt"], "the file is empty"),
    (["report", "{bad}/notarun"], "missing config.json, model.safetensors, tokenizer.json"),
    (["report", "{tmp}/nothere"], "is not a run folder (no such folder)"),
    (["embed", "{bad}/ok.txt", "-o", "{bad}/ok.txt"], "unknown output format"),
    (["predict", "{bad}/ok.txt", "--model", "{lm}"], "the model has no task heads"),
    (["predict", "{bad}/latin1.txt", "--task", "topic"], "line 2 is not UTF-8 (byte 0xe9)"),
    (["predict", "{bad}/ok.txt", "--task", "topic", "--id-column", "id"],
     "is read as one text per line"),
    (["predict", "{bad}/missing.txt", "--task", "topic"], "missing.txt: no such file"),
    (["similarity", "{bad}/ok.txt"], "line 1 has no tab; give one pair per line"),
    (["similarity", "{bad}/tabs.txt"], "line 1 has 2 tabs; give one pair per line"),
    (["similarity", "{bad}/ok.txt", "{bad}/two.txt"], "has 1 lines and"),
    (["similarity", "--matrix", "{bad}/empty.txt"], "the file is empty"),
    (["similarity", "{bad}/missing.txt", "{bad}/ok.txt"], "missing.txt: no such file"),
    (["similarity", "--matrix", "{bad}/latin1.txt"], "line 2 is not UTF-8"),
    (["search", "{bad}/ok.txt", "--corpus", "{bad}/empty.txt"], "the file is empty"),
    (["search", "{bad}/ok.txt", "--corpus", "{bad}/latin1.txt"], "line 2 is not UTF-8"),
    (["search", "{bad}/ok.txt", "--corpus", "{bad}/range.csv", "--corpus-column", "nope"],
     "no column 'nope'; columns are text, label; pass --corpus-column with one of them"),
    (["search", "{bad}/vectors.npy", "--corpus", "{bad}/ok.txt"],
     "vectors.npy is a NumPy .npy file (vectors); give the texts"),
    (["embed", "{bad}/vectors.npy"], "vectors.npy is a NumPy .npy file (vectors)"),
    (["similarity", "--matrix", "{bad}/lines.png", "--plot", "{bad}/lines.png"],
     "lines.png is the input file; write to another file"),
    (["similarity", "--matrix", "{bad}/two.txt", "--plot", "{tmp}/p.xyz"],
     "p.xyz: unknown output format; end the name with .png, .pdf, .svg"),
    (["similarity", "{bad}/ok.txt", "{bad}/ok.txt", "--plot", "{tmp}/p.png"],
     "--plot goes with --matrix FILE"),
    (["similarity", "{bad}/ok.txt", "{bad}/ok.txt", "--pair-columns", "a,b"],
     "A and B are line files paired line by line: drop --pair-columns"),
    (["similarity", "{bad}/range.csv", "{bad}/ok.txt"], "with A and B, each is a line file"),
    (["similarity", "{bad}/range.csv", "--pair-columns", "a,b"],
     "no column 'a'; columns are text, label; pass --pair-columns with two of them"),
    (["import-hf", "{lm}", "-o", "{tmp}/r"], "is a sentcli run already; use it as it is"),
    (["import-hf", "{bad}/notarun", "-o", "{lm}"], "exists and is not empty"),
    (["import-hf", "{bad}/ok.txt", "-o", "{tmp}/r"], "is not a folder"),
    (["import-hf", "{bad}/hfjson", "-o", "{tmp}/r"], "config.json is not readable JSON"),
    (["evaluate", "--model", "{bad}/badjson"], "badjson/config.json is corrupt"),
    (["embed", "{bad}/ok.txt", "--model", "{bad}/badjson"], "badjson/config.json is corrupt"),
    (["pretrain", "{data}/imdb_unsup", "-o", "{bad}/badjson", "--resume"],
     "badjson/config.json is corrupt"),
    (["train-encoder", "--task", "t={data}/ag_news", "--init", "{bad}/badjson", "-o", "{tmp}/e"],
     "badjson/config.json is corrupt"),
    (["export", "{lm}", "-o", "{tmp}/x", "--format", "sentence-transformers"],
     "sentcli's own Pre-LN transformer, which sentence-transformers cannot load"),
    (["export", "{lm}", "-o", "{lm}/onnx"], "is inside the run"),
    (["export", "{bad}/notarun", "-o", "{tmp}/x"], "missing config.json"),
    (["export", "{lm}", "-o", "{bad}"], "holds files that are not a sentcli export"),
    (["export", "{lm}", "-o", "{tmp}/x", "--format", "nope"], "'nope' is not one of 'onnx'"),
    (["export", "{lm}", "-o", "{tmp}/x", "-f", "sentence-transformers", "--quantize", "int8"],
     "--quantize int8 applies to --format onnx"),
    (["export", "{lm}", "-o", "/proc/x"], "cannot write /proc/x"),
    (["export", "{lm}", "-o", "{bad}/ok.txt"], "is a file"),
    # Matryoshka widths, --dims, quantized vectors and the persistent index
    ([*encoder_on("{data}/stsb"), "--matryoshka-dims", "64,128"], "strictly descending"),
    ([*encoder_on("{data}/stsb"), "--log-to", "wandb"], "'wandb' is not one of 'tensorboard'"),
    ([*PRETRAIN, "--best-by", "metric"], "a language model has no metric but its validation"),
    ([*encoder_on("{data}/imdb_unsup"), "--best-by", "metric"], "task t has no metric"),
    ([*encoder_on("{data}/stsb"), "--best-by", "loss"], "'loss' is not one of 'val-loss'"),
    ([*encoder_on("{data}/stsb"), "--matryoshka-dims", "64,x"], "integers separated by commas"),
    ([*encoder_on("{data}/stsb"), "--matryoshka-dims", "64,32", "--matryoshka-weights", "1"],
     "one weight per width"),
    ([*encoder_on("{data}/stsb"), "--matryoshka-dims", "64,32", "--matryoshka-weights", "1,0"],
     "positive numbers"),
    ([*encoder_on("{data}/stsb"), "--n-embd", "32", "--n-head", "2", "--matryoshka-dims", "64"],
     "64: the model's vectors are 32 wide"),
    (["embed", "{bad}/ok.txt", "--dims", "0"], "--dims 0: the model's vectors are 384 wide"),
    (["embed", "{bad}/ok.txt", "--dims", "385"], "give 1 to 384"),
    (["similarity", "{bad}/ok.txt", "{bad}/ok.txt", "--dims", "385"], "give 1 to 384"),
    (["evaluate", "--task", "sts={data}/stsb", "--dims", "385"], "give 1 to 384"),
    (["embed", "{bad}/ok.txt", "--quantize", "int8"], "needs --ranges FILE"),
    (["embed", "{bad}/ok.txt", "--quantize", "binary", "--ranges", "{bad}/ranges.json"],
     "calibrated on another model's vectors"),
    (["embed", "{bad}/ok.txt", "--quantize", "binary", "--ranges", "{bad}/old_ranges.json"],
     "has no means (an older calibrate); calibrate again"),
    (["index", "build", "{bad}/ok.txt", "-o", "{tmp}/x.index", "--dtype", "b1", "--ranges",
      "{bad}/old_ranges.json"], "has no means (an older calibrate); calibrate again"),
    (["embed", "{bad}/ok.txt", "--ranges", "{bad}/ranges.json"], "--ranges is for --quantize"),
    (["embed", "{bad}/ok.txt", "--quantize", "int8", "--ranges", "{bad}/ok.txt"],
     "is not a ranges file"),
    (["embed", "{bad}/ok.txt", "--quantize", "int8", "--ranges", "{bad}/none.json"],
     "no such ranges file; make one with sentcli calibrate"),
    (["embed", "{bad}/ok.txt", "--quantize", "int8", "--ranges", "{bad}/ranges.json"],
     "calibrated on another model's vectors"),
    (["embed", "{bad}/ok.txt", "--quantize", "int8", "--ranges", "{bad}/ranges.json",
      "--no-normalize"], "drop --no-normalize"),
    (["embed", "{bad}/ok.txt", "--quantize", "int4"], "'int4' is not one of"),
    (["calibrate", "{bad}/ok.txt", "-o", "{tmp}/r.txt"], "unknown output format"),
    (["calibrate", "{bad}/empty.txt", "-o", "{tmp}/r.json"], "empty"),
    (["calibrate", "{bad}/ok.txt", "-o", "{tmp}/r.json", "--dims", "385"], "give 1 to 384"),
    (["index", "build", "{bad}/ok.txt", "-o", "{bad}"], "holds files that are not a sentcli index"),
    (["index", "build", "{bad}/ok.txt", "-o", "{bad}/ok.txt"], "is a file"),
    (["index", "build", "{bad}/ok.txt", "-o", "{tmp}/no/x.index"], "does not exist"),
    (["index", "build", "{bad}/missing.txt", "-o", "{tmp}/x.index"], "no such file"),
    (["index", "build", "{bad}/ok.txt", "-o", "{tmp}/x.index", "--dtype", "f8"],
     "'f8' is not one of"),
    (["index", "build", "{bad}/ok.txt", "-o", "{tmp}/x.index", "--ranges", "{bad}/ranges.json",
      "--dtype", "f16"], "--ranges is for --dtype i8"),
    (["index", "build", "{bad}/ok.txt", "-o", "{tmp}/x.index", "--ranges", "{bad}/ranges.json"],
     "calibrated on another model's vectors"),
    (["index", "build", "{bad}/ok.txt", "-o", "{tmp}/x.index", "--dims", "385"], "give 1 to 384"),
    (["index", "build", "{bad}/ok.txt", "-o", "{tmp}/x.index", "--connectivity", "0"],
     "--connectivity 0: give 2 to 256"),
    (["search", "{bad}/ok.txt", "--index", "{bad}", "--threshold", "2"], "between -1 and 1"),
    (["index", "build", "{bad}/ok.txt", "-o", "{tmp}/x.index", "--texts", "{bad}/ok.txt"],
     "--texts is for a .npy of vectors"),
    (["index", "build", "{bad}/vectors.npy", "-o", "{tmp}/x.index"], "are not normalised"),
    (["index", "build", "{bad}/ints.npy", "-o", "{tmp}/x.index"], "not float32"),
    (["index", "build", "{bad}/vectors.npy", "-o", "{tmp}/x.index", "--dims", "2"],
     "a .npy is indexed as it is"),
    (["index", "build", "{bad}/empty.txt", "-o", "{tmp}/x.index"], "empty"),
    (["search", "{bad}/ok.txt"], "give one: --corpus FILE (exact) or --index FOLDER"),
    (["search", "{bad}/ok.txt", "--index", "{tmp}/none"], "no such index"),
    (["search", "{bad}/ok.txt", "--index", "{bad}", "--ef", "0"], "--ef must be at least 1"),
    (["search", "{bad}/ok.txt", "--index", "{bad}", "--rescore", "-1"], "give 0 or more"),
    (["search", "{bad}/ok.txt", "--index", "{bad}"], "is not a complete sentcli index"),
    (["search", "{bad}/ok.txt", "--corpus", "{bad}/ok.txt", "--rescore", "2"],
     "--rescore is for --index"),
    (["search", "{bad}/ok.txt", "--corpus", "{bad}/ok.txt", "--index", "{bad}"], "give one"),
]  # fmt: skip
BAD_CASES += SHELL + UNWRITABLE + VALUES
"""The bad-input table: each case runs through the CLI and must exit 2 with one `error:`
line on stderr naming the problem, no traceback, nothing on stdout, nothing written and no
file it could touch changed (sha256 before and after). More cases: embed/predict in
test_embed.py, import-hf in test_hf.py, search in test_search.py (counted below)."""


@pytest.mark.parametrize("args,message", BAD_CASES, ids=[f"{c[0][0]}:{c[1]}" for c in BAD_CASES])
def test_bad_input_exits_2_with_one_line(
    args: list[str], message: str, bad: Path, pipeline: Path, tmp_path: Path
) -> None:
    if ("cuda" in args or "fp16" in args) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda / fp16 is valid here")
    values = {"bad": bad, "data": DATA, "tmp": tmp_path, "tok": pipeline / "tok.json"}
    values |= {"lm": pipeline / "lm", "default": DEFAULT_MODEL, "enc": bad / "enc"}
    values |= {"long": "a" * 300}
    argv = [a.format(**values) for a in args]
    if argv[0] in ("pretrain", "train-encoder", "train-mtl"):  # were a case ever accepted
        argv[1:1] = ["--max-steps", "1"]
    shipped = {p: p.stat().st_mtime_ns for p in [*DATA.rglob("*"), *DEFAULT_MODEL.rglob("*")]}
    before = digests(bad, pipeline)
    result = run(*argv)
    assert_refused(result, message)
    assert result.stdout == ""  # refused before any work: no table, no result
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file
    assert digests(bad, pipeline) == before
    assert shipped == {p: p.stat().st_mtime_ns for p in shipped}


def test_the_bad_input_tables_hold_at_least_240_cases() -> None:
    import test_embed
    import test_hf
    import test_hostile
    import test_search

    tables = [BAD_CASES, test_embed.BAD, test_hf.BAD_CHECKPOINTS, test_search.BAD_SEARCH]
    tables.append(test_hostile.BAD_HOSTILE)
    assert sum(map(len, tables)) >= 240, [len(t) for t in tables]


def test_sigterm_saves_a_resumable_state_and_exits_143(
    tmp_path: Path, corpus_file: Path, tokenizer_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from sentcli import checkpoint as ckpt

    run_dir = tmp_path / "lm"
    cmd = [
        sys.executable,
        "-m",
        "sentcli",
        "pretrain",
        str(corpus_file),
        "--tokenizer",
        str(tokenizer_path),
    ]
    cmd += [*FAST_FLAGS, "--max-steps", "100000", "--log-every", "1", "-o", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any(
            r["kind"] == "train" for r in ckpt.read_metrics(run_dir)
        ):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "--resume" in err and "Traceback" not in err
    weights, step = ckpt.load_weights(run_dir)
    assert step >= 1 and ckpt.load_train_state(run_dir, step)["step"] == step


def test_report_refuses_a_log_with_a_corrupt_line_and_rewrites_nothing(
    pipeline: Path, tmp_path: Path
) -> None:
    import shutil

    run_dir = tmp_path / "lm"
    shutil.copytree(pipeline / "lm", run_dir)
    log = run_dir / "metrics.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) >= 3
    lines[1] = lines[1][: len(lines[1]) // 2]  # garbled in the middle: not a hard kill's cut
    log.write_text("\n".join(lines) + "\n")
    plots = {p: p.stat().st_mtime_ns for p in (run_dir / "report").glob("*.png")}
    result = run("report", run_dir)
    assert result.exit_code == 2, result.output
    assert "metrics.jsonl: line 2 is not JSON" in result.output
    assert "Traceback" not in result.output
    assert plots and plots == {p: p.stat().st_mtime_ns for p in (run_dir / "report").glob("*.png")}
    log.write_text("\n".join(lines[:1] + lines[2:]) + "\n" + lines[2][:10])  # a cut last line
    assert run("report", run_dir).exit_code == 0


def test_overwrite_never_deletes_an_input_a_foreign_folder_or_the_working_folder(
    pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    data = tmp_path / "proj" / "data"
    data.mkdir(parents=True)
    write_csv(data / "train.csv", read_rows(DATA / "ag_news" / "train.csv.gz", 60))
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("x")
    (tmp_path / "texts.txt").write_text("some text to learn from\n" * 50)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def snapshot() -> dict[Path, str]:
        files = (p for p in tmp_path.rglob("*") if p.is_file())
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = snapshot()
    encoder = ["train-encoder", "--task", f"t={data}", "--tokenizer", str(pipeline / "tok.json")]
    cases = [
        ([*encoder, "-o", "."], "--overwrite would delete ."),
        ([*encoder, "-o", str(tmp_path)], "--overwrite would delete"),
        ([*encoder, "-o", str(tmp_path / "home")], "--overwrite would delete"),
        ([*encoder, "-o", str(data)], "which holds this command's input"),
        ([*encoder, "-o", "proj"], "which holds this command's input"),
        ([*encoder, "-o", "other"], "also holds notes.txt"),
        (["pretrain", "texts.txt", "--tokenizer", "texts.txt", "-o", "."], "would delete ."),
    ]
    for args, message in cases:
        result = run(*args, "--overwrite", "--max-steps", "1")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    result = run("build-tokenizer", "texts.txt", "-o", "texts.txt", "--vocab-size", "100")
    assert result.exit_code == 2 and "is an input of the tokenizer" in result.output
    assert snapshot() == before
    result = run(*encoder, "-o", "run", "--max-steps", "1", "--quiet")  # a real run …
    assert result.exit_code == 0, result.output
    result = run(*encoder, "-o", "run", "--max-steps", "1", "--quiet", "--overwrite")
    assert result.exit_code == 0, result.output  # … is replaced


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(
    pipeline: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "train.csv", read_rows(DATA / "ag_news" / "train.csv.gz", 60))
    args = ["train-encoder", "--task", f"t={data}", "--tokenizer", str(pipeline / "tok.json")]
    args += ["-o", str(tmp_path / "run"), "--max-steps", "1", "--quiet"]
    lock = tmp_path / ".run.lock"
    hold = (  # another writer: holds the lock the way sentcli does, then sleeps
        "import fcntl, json, os, socket, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),"
        " 'started': time.time()}).encode())\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert f"is being written by process {holder.pid}" in result.output
        assert str(lock) in result.output and not (tmp_path / "run").exists()
    finally:
        holder.kill()  # as kill -9: the kernel drops its lock; the file stays
        holder.wait()
    assert lock.exists()
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model.safetensors").is_file() and not lock.exists()


def test_evaluate_works_from_any_folder_and_names_a_missing_recorded_source(
    pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    rows = read_rows(DATA / "ag_news" / "train.csv.gz", 80)
    write_csv(data / "train.csv", rows[:60])
    write_csv(data / "test.csv", rows[60:])
    (data / "labels.txt").write_text("World\nSports\nBusiness\nSci/Tech\n")
    monkeypatch.chdir(tmp_path)
    args = ["train-encoder", "--task", "t=data", "--tokenizer", str(pipeline / "tok.json")]
    assert run(*args, "-o", "run", "--max-steps", "1", "--quiet").exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("evaluate", "--model", tmp_path / "run")
    assert result.exit_code == 0, result.output
    shutil.move(data, tmp_path / "moved")
    result = run("evaluate", "--model", tmp_path / "run")
    assert result.exit_code == 2
    assert f"task t's recorded source {data} does not exist here" in result.output
    assert "pass --task t=SOURCE" in result.output
