"""torchrun: train-mtl in 2 CPU processes (gloo) against one process with the same global
batch; a SIGTERM to torchrun mid-run, then --resume under torchrun."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sentcli import checkpoint as ckpt
from sentcli import dist
from sentcli.cli import app

from helpers import DATA

# Every test here shares one pair of torchrun runs (about 20 s).
pytestmark = pytest.mark.slow

ARGS = [
    "train-mtl",
    "--task",
    f"topic={DATA / 'ag_news'}",
    "--task",
    f"sentiment={DATA / 'imdb'}",
    "--max-samples-per-task",
    "400",
    "--n-layer",
    "2",
    "--n-head",
    "2",
    "--n-embd",
    "32",
    "--block-size",
    "48",
    "--batch-size",
    "15",  # odd: the two ranks' shares differ in size, and the loss must still match
    "--dropout",
    "0",  # one process draws other dropout masks than two
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--log-every",
    "2",
    "--eval-every",
    "20",
    "--quiet",
]
RUN_FILES = {"config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl"}
RUN_FILES |= {"train_state.pt", "report"}


def torchrun(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.Popen(
        [*cmd, "-m", "sentcli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def train_records(run: Path) -> list[dict]:
    return [r for r in ckpt.read_metrics(run) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tokenizer_path: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist")
    args = [*ARGS, "--tokenizer", str(tokenizer_path)]
    # 2 processes, stopped by a SIGTERM to torchrun after a few logged steps, then resumed.
    two = root / "two"
    proc = torchrun([*args, "-o", str(two)])
    deadline = time.time() + 120
    while time.time() < deadline and len(train_records(two)) < 3 and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "interrupted at step" in err, err
    stopped_at = ckpt.load_weights(two)[1]
    resumed = torchrun(["train-mtl", "--resume", "-o", str(two), "--quiet"])
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    (root / "two.out").write_text(out)
    (root / "two.err").write_text(err)
    (root / "stopped_at").write_text(str(stopped_at))
    one = root / "one"
    result = CliRunner().invoke(app, [*args, "-o", str(one)])
    assert result.exit_code == 0, result.output
    return {"two": two, "one": one, "root": root}


def test_two_ranks_end_with_identical_weights_equal_to_the_saved_ones(
    runs: dict[str, Path],
) -> None:
    summary = json.loads((runs["two"] / "report" / "summary.json").read_text())
    assert summary["ranks"] == 2
    rank0, rank1 = summary["weights_sha256"]
    assert rank0 == rank1
    saved = ckpt.load_run(runs["two"])[1]
    assert dist.weights_digest(saved) == rank0


def test_loss_table_matches_one_process_with_the_same_global_batch(
    runs: dict[str, Path],
) -> None:
    stopped_at = int((runs["root"] / "stopped_at").read_text())
    assert 0 < stopped_at < train_records(runs["one"])[-1]["step"]  # a real mid-run stop
    two, one = train_records(runs["two"]), train_records(runs["one"])
    assert [r["step"] for r in two] == [r["step"] for r in one]  # resume left no gap/repeat
    for a, b in zip(two, one, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3, abs=1e-4), a["step"]
        assert a["tokens_seen"] == b["tokens_seen"]
    evals = [r["metrics"] for r in ckpt.read_metrics(runs["two"]) if r["kind"] == "eval"]
    evals_one = [r["metrics"] for r in ckpt.read_metrics(runs["one"]) if r["kind"] == "eval"]
    assert len(evals) == len(evals_one) >= 3
    for a, b in zip(evals, evals_one, strict=True):
        for key in ("topic/val_loss", "sentiment/val_loss", "topic/train_loss"):
            if b[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), key
    w2 = ckpt.load_weights(runs["two"])[0]
    w1 = ckpt.load_weights(runs["one"])[0]
    assert all(torch.allclose(w2[k], w1[k], atol=1e-4) for k in w1)


def test_only_one_set_of_files_and_one_report_was_written(runs: dict[str, Path]) -> None:
    assert {p.name for p in runs["two"].iterdir()} == RUN_FILES
    assert not list(runs["two"].rglob("*.tmp")) and not list(runs["two"].rglob("*rank*"))
    out = (runs["root"] / "two.out").read_text()
    assert out.count("per-task losses and scores") == 1  # rank 1 printed nothing
    assert out.count("topic test: accuracy") == 1
    assert "resuming at step" in (runs["root"] / "two.err").read_text()


def test_similarity_tasks_under_two_ranks(tmp_path: Path, tokenizer_path: Path) -> None:
    """In-batch negatives gathered over 2 processes (an odd global batch, no dropout) train
    like one process: the same logged losses. Then scored pairs and SimCSE beside them: the
    ranks end with the same weights and the epoch-0 row (gathered validation vectors)
    matches one process."""
    import csv
    import gzip

    with gzip.open(DATA / "stsb" / "train.csv.gz", "rt", encoding="utf-8", newline="") as f:
        close = [r for r in csv.DictReader(f) if float(r["score"]) >= 3.5][:300]
    with open(tmp_path / "pairs.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["anchor", "positive"])
        w.writerows([r["sentence1"], r["sentence2"]] for r in close)
    base = [*ARGS[5:], "--tokenizer", str(tokenizer_path), "--max-steps", "8"]
    para = ["--task", f"para={tmp_path / 'pairs.csv'}"]

    def both(tasks: list[str], name: str, extra: list[str]) -> tuple[Path, Path]:
        args = ["train-mtl", *tasks, *base, *extra]
        proc = torchrun([*args, "-o", str(tmp_path / f"{name}2")])
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / f"{name}1")])
        assert result.exit_code == 0, result.output
        return tmp_path / f"{name}2", tmp_path / f"{name}1"

    two, one = both([*ARGS[1:5], *para], "nce", [])
    losses = [[r["loss"] for r in train_records(run)] for run in (two, one)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    tasks = [*para, "--task", f"sts={DATA / 'stsb'}", "--task", f"simcse={DATA / 'imdb_unsup'}"]
    two, one = both(tasks, "mix", ["--dropout", "0.1"])
    summary = json.loads((two / "report" / "summary.json").read_text())
    assert summary["ranks"] == 2 and len(set(summary["weights_sha256"])) == 1
    rows = [
        json.loads((r / "report" / "summary.json").read_text())["history"][0] for r in (two, one)
    ]
    for key in ("sts/spearman", "sts/val_loss", "para/recall@1", "para/mrr", "simcse/val_loss"):
        assert rows[0][key] == pytest.approx(rows[1][key], abs=1e-5), key


def test_embed_and_predict_under_two_ranks_match_one_process(
    tmp_path: Path, runs: dict[str, Path]
) -> None:
    """Each rank embeds its share of every chunk; the main rank writes one output in input
    order, equal to one process's (fp32, within 1e-5). 1,100 texts of mixed lengths make two
    chunks, the second of odd size."""
    from helpers import read_rows

    texts = [t for t, _ in read_rows(DATA / "ag_news" / "test.csv.gz", 900)]
    texts += [t for t, _ in read_rows(DATA / "imdb" / "test.csv.gz", 200)]
    (tmp_path / "in.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    model = ["--model", str(runs["one"]), "--device", "cpu", "--precision", "fp32"]
    common = [str(tmp_path / "in.txt"), *model, "--batch-size", "8"]
    predict = ["predict", *common, "--task", "sentiment", "--top-k", "2", "--format", "jsonl"]
    outputs = {}
    for name, launch in (("two", torchrun), ("one", None)):
        embed = ["embed", *common, "-o", str(tmp_path / f"{name}.npy")]
        if launch is None:
            for args in (embed, predict):
                result = CliRunner().invoke(app, args)
                assert result.exit_code == 0, result.output
            outputs[name] = result.stdout
            continue
        proc = launch(embed)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert err.count("embedded 1,100 texts") == 1, err  # one report, from the main rank
        proc = launch(predict)
        outputs[name], err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    two, one = np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy")
    assert two.shape == one.shape == (1100, 32)
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-5)
    rows = [[json.loads(s) for s in outputs[n].rstrip("\n").split("\n")] for n in ("two", "one")]
    assert len(rows[0]) == len(rows[1]) == 1100
    for a, b in zip(*rows, strict=True):
        assert a["text"] == b["text"] and [t["label"] for t in a["top"]] == [
            t["label"] for t in b["top"]
        ]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
    # search: the corpus index is embedded in shares and written once, by the main rank
    (tmp_path / "q.txt").write_text("\n".join(texts[::100]) + "\n")
    found = {}
    for name, launch in (("two", torchrun), ("one", None)):
        args = ["search", str(tmp_path / "q.txt"), "--corpus", str(tmp_path / "in.txt"), "-k", "3"]
        args += [*model, "--cache", str(tmp_path / f"cache-{name}"), "-q"]
        if launch is None:
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            found[name] = result.stdout
            continue
        proc = launch(args)
        found[name], err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    hits = [[line.split("\t") for line in found[n].splitlines()] for n in ("two", "one")]
    assert len(hits[0]) == len(hits[1]) == 33  # 11 queries × 3
    for a, b in zip(*hits, strict=True):
        assert a[:2] == b[:2] and a[3] == b[3]  # query, rank, corpus row
        assert float(a[2]) == pytest.approx(float(b[2]), abs=2e-4)
    assert len(list((tmp_path / "cache-two" / "search").iterdir())) == 1  # one index, no temps
    # similarity --matrix: the other rank computes its share and writes nothing (it used to
    # crash on its empty share); the main rank prints the matrix of one process
    (tmp_path / "few.txt").write_text("\n".join(texts[:9]) + "\n")
    matrix = ["similarity", "--matrix", str(tmp_path / "few.txt"), *model, "--format", "tsv"]
    shown = {}
    for name, launch in (("two", torchrun), ("one", None)):
        args = [*matrix, "--plot", str(tmp_path / f"m-{name}.png")]
        if launch is None:
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            shown[name] = result.stdout
            continue
        proc = launch(args)
        shown[name], err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    np.testing.assert_allclose(
        np.loadtxt(io.StringIO(shown["two"])), np.loadtxt(io.StringIO(shown["one"])), atol=2e-6
    )
    assert np.loadtxt(io.StringIO(shown["two"])).shape == (9, 9)
    assert (tmp_path / "m-two.png").is_file()
    # stdin is refused wherever an input reads it: embed's, and search's queries (refused
    # before the corpus is embedded)
    for args in (["embed", "-"], ["search", "-", "--corpus", str(tmp_path / "in.txt")]):
        refused = torchrun([*args, *model])
        _, err = refused.communicate(timeout=120)
        assert refused.returncode != 0
        assert "error: under torchrun every process reads the input itself" in err
