"""Hostile input, round 3: run folders whose config.json lies about the weights (every command
that loads a run), exports that must not delete what they did not write, lone surrogates in
JSON lines, a run's tokenizer, a teacher named only in --config. Each case: exit 2, one
`error:` line, nothing on stdout, no byte changed around it (the same harness as
test_cli.py's table). Beside the table: the export overwrite round trip with every byte
checked, a full disk, blank rows, read-only run folders and the Python API's forms."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sentcli import api, files
from sentcli import checkpoint as ckpt
from sentcli.cli import app
from sentcli.errors import ConfigError

from helpers import DATA, FAST, assert_refused, digests, need, read_rows, write_csv

runner = CliRunner()


def lying(run: Path, root: Path, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    """A copy of `run` whose config.json `change` edited (the weights stay as they were)."""
    shutil.copytree(run, root / name)
    config = json.loads((run / ckpt.CONFIG).read_text("utf-8"))
    change(config)
    (root / name / ckpt.CONFIG).write_text(json.dumps(config), "utf-8")


def model_key(key: str, value: int) -> Callable[[dict[str, Any]], None]:
    return lambda c: c["model"].__setitem__(key, value)


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory,
    tokenizer_path: Path,
    topic_dir: Path,
    sentiment_dir: Path,
) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    tasks = [
        api.TaskConfig("topic", str(topic_dir)),
        api.TaskConfig("sentiment", str(sentiment_dir)),
    ]
    api.train_mtl(tasks, run, tokenizer=tokenizer_path, options={**FAST, "max_steps": 1})
    lying(run, root, "layers", model_key("n_layer", 1_000_000))
    lying(run, root, "width", model_key("n_embd", 2**30))
    lying(run, root, "vocab", model_key("vocab_size", 10**11))
    lying(run, root, "block", model_key("block_size", 10**9))
    lying(run, root, "inner", model_key("n_inner", 10**9))
    lying(run, root, "hidden", model_key("head_hidden", 10**9))
    lying(run, root, "labels", lambda c: c["tasks"][0].__setitem__("label_names", ["a"] * 9))
    (root / "ok.txt").write_text("hello\n", "utf-8")
    (root / "two.txt").write_text("hello\nworld\n", "utf-8")
    (root / "sur.jsonl").write_text('{"text": "fine"}\n{"text": "bad \\ud800 here"}\n', "utf-8")
    (root / "sur_id.jsonl").write_text('{"text": "fine", "id": "\\udfff"}\n', "utf-8")
    (root / "sur_pairs.jsonl").write_text(
        '{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "c \\udc00", "sentence2": "d"}\n',
        "utf-8",
    )
    (root / "sur_train.jsonl").write_text(
        "".join(f'{{"text": "row {i}", "label": {i % 2}}}\n' for i in range(6))
        + '{"text": "a \\ud83d alone", "label": 1}\n',
        "utf-8",
    )
    export = root / "export"
    if importlib.util.find_spec("onnxscript"):  # the export cases need the onnx extra
        assert runner.invoke(app, ["export", str(run), "-o", str(export)]).exit_code == 0
        shutil.copytree(export, root / "export_mine")
        (root / "export_mine" / "notes.md").write_text("mine\n", "utf-8")
        (root / "linked").symlink_to(export)
    (root / "teacher.toml").write_text(f'teacher = "{root / "teacher_out"}"\n', "utf-8")
    shutil.copytree(run, root / "teacher_out")
    return root


# {h}: the hostile folder; {tmp}: the case's own empty folder; {tok}: a tokenizer
LIES = {
    "layers": "n_layer is 1,000,000 but the weights hold 2 (blocks)",
    "width": "n_embd is 1,073,741,824 but the weights hold 16",
    "vocab": "vocab_size is 100,000,000,000 but the weights hold",
    "block": "block_size is 1,000,000,000 but the weights hold 16",
    "inner": "n_inner is 1,000,000,000 but the weights hold 64",
    "hidden": "head_hidden is 1,000,000,000 but the weights hold 4 (task topic's head)",
    "labels": "task topic's head size is 9 but the weights hold 4",
}
USES = [  # every command that loads a run, each given a lying one
    (["embed", "{h}/ok.txt", "-m", "{h}/%s"], "layers"),
    (["embed", "{h}/ok.txt", "-m", "{h}/%s", "-o", "{tmp}/v.npy"], "width"),
    (["embed", "{h}/ok.txt", "-m", "{h}/%s"], "vocab"),
    (["embed", "{h}/ok.txt", "-m", "{h}/%s"], "block"),
    (["embed", "{h}/ok.txt", "-m", "{h}/%s"], "inner"),
    (["embed", "{h}/ok.txt", "-m", "{h}/%s"], "hidden"),
    (["embed", "{h}/ok.txt", "-m", "{h}/%s"], "labels"),
    (["predict", "{h}/ok.txt", "-m", "{h}/%s", "--task", "topic"], "layers"),
    (["predict", "{h}/ok.txt", "-m", "{h}/%s", "--task", "topic"], "vocab"),
    (["similarity", "{h}/two.txt", "{h}/two.txt", "-m", "{h}/%s"], "width"),
    (["similarity", "--matrix", "{h}/two.txt", "-m", "{h}/%s", "--plot", "{tmp}/m.png"], "block"),
    (["search", "{h}/ok.txt", "--corpus", "{h}/two.txt", "-m", "{h}/%s", "--cache", "{cache}"],
     "layers"),
    (["search", "{h}/ok.txt", "--corpus", "{h}/two.txt", "-m", "{h}/%s", "--cache", "{cache}"],
     "inner"),
    (["evaluate", "-m", "{h}/%s"], "width"),
    (["evaluate", "-m", "{h}/%s", "--task", "sts={data}/stsb"], "vocab"),
    (["export", "{h}/%s", "-o", "{tmp}/x"], "layers"),
    (["export", "{h}/%s", "-o", "{tmp}/x", "-f", "sentence-transformers"], "block"),
    (["train-mtl", "--task", "t={data}/ag_news", "--init", "{h}/%s", "-o", "{tmp}/e"], "layers"),
    (["train-encoder", "--task", "t={data}/ag_news", "--init", "{h}/%s", "-o", "{tmp}/e"],
     "width"),
    (["train-encoder", "--task", "d={data}/imdb_unsup", "--tokenizer", "{tok}", "--teacher",
      "{h}/%s", "-o", "{tmp}/e"], "vocab"),
    (["train-mtl", "--task", "d={data}/imdb_unsup", "--tokenizer", "{tok}", "--teacher",
      "{h}/%s", "-o", "{tmp}/e"], "hidden"),
]  # fmt: skip
BAD_HOSTILE = [([a.replace("%s", lie) for a in args], LIES[lie]) for args, lie in USES]
BAD_HOSTILE += [
    # exports replace only exports, never through a link, never a folder that matters
    (["export", "{h}/run", "-o", "{h}/export_mine", "--overwrite"],
     "only replaces a sentcli export, and {h}/export_mine also holds notes.md"),
    (["export", "{h}/run", "-o", "{h}/export"], "holds an export; pass --overwrite"),
    (["export", "{h}/run", "-o", "{h}/linked", "--overwrite"], "is a symbolic link (to"),
    (["export", "{h}/run", "-o", "{h}/linked"], "is a symbolic link"),
    (["export", "{h}/run", "-o", ".", "--overwrite"], "is a folder an export would replace whole"),
    (["export", "{h}/run", "-o", "{cwd}", "--overwrite"], "an export would replace whole"),
    (["export", "{h}/run", "-o", "{home}", "--overwrite"], "an export would replace whole"),
    (["export", "{h}/run", "-o", "/", "--overwrite"], "an export would replace whole"),
    (["export", "{h}/run", "-o", "{h}", "--overwrite"], "holds files that are not a sentcli"),
    (["export", "{h}/run", "-o", "{h}/run/report"], "is inside the run"),
    (["export", "{h}/run", "-o", "{h}/ok.txt/x"], "does not exist; create it first"),
    # a lone UTF-16 surrogate in JSON lines: file, line and column
    (["embed", "{h}/sur.jsonl"], "sur.jsonl: line 2, column 15: \\ud800 is half of a UTF-16 pair"),
    (["predict", "{h}/sur.jsonl", "--task", "sentiment"], "line 2, column 15: \\ud800"),
    (["embed", "{h}/sur_id.jsonl", "--id-column", "id"], "line 1, column 25: \\udfff"),
    (["similarity", "{h}/sur_pairs.jsonl"], "sur_pairs.jsonl: line 2, column 18: \\udc00"),
    (["search", "{h}/ok.txt", "--corpus", "{h}/sur.jsonl", "--cache", "{cache}"],
     "line 2, column 15: \\ud800"),
    (["search", "{h}/sur.jsonl", "--corpus", "{h}/two.txt", "--cache", "{cache}"],
     "line 2, column 15: \\ud800"),
    (["train-encoder", "--task", "t={h}/sur_train.jsonl", "--tokenizer", "{tok}", "-o",
      "{tmp}/e"], "sur_train.jsonl: line 7, column 13: \\ud83d is half of a UTF-16 pair"),
    (["build-tokenizer", "{h}/sur_train.jsonl", "-o", "{tmp}/t.json"], "line 7, column 13"),
    # resuming a run whose config.json lies is refused before anything is loaded
    (["train-mtl", "--resume", "-o", "{h}/layers"], LIES["layers"]),
    # a run's tokenizer is not replaced by accident
    (["build-tokenizer", "{data}/ag_news", "-o", "{h}/run/tokenizer.json"],
     "is the tokenizer of the run in"),
    # a teacher named only in --config is an input --overwrite must keep
    (["train-encoder", "--task", "d={data}/imdb_unsup", "--tokenizer", "{tok}", "--config",
      "{h}/teacher.toml", "-o", "{h}/teacher_out", "--overwrite"],
     "holds this command's input {h}/teacher_out"),
    # --format is for --matrix
    (["similarity", "{h}/two.txt", "{h}/two.txt", "--format", "tsv"],
     "--format goes with --matrix FILE"),
]  # fmt: skip


@pytest.mark.parametrize(
    "args,message", BAD_HOSTILE, ids=[f"{c[0][0]}:{c[1][:50]}" for c in BAD_HOSTILE]
)
def test_hostile_input_exits_2_with_one_line(
    args: list[str],
    message: str,
    hostile: Path,
    tokenizer_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if args[0] == "export":
        need("onnxscript", "onnx")
    home = tmp_path.parent / f"{tmp_path.name}-home"  # a home folder of the case's own
    home.mkdir()
    (home / "keep.txt").write_text("mine\n")
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path.parent / f"{tmp_path.name}-cwd"
    cwd.mkdir()
    (cwd / "keep.txt").write_text("mine\n")
    monkeypatch.chdir(cwd)
    values = {"h": hostile, "tmp": tmp_path, "tok": tokenizer_path, "data": DATA}
    values |= {"home": home, "cwd": cwd, "cache": tmp_path.parent / f"{tmp_path.name}-cache"}
    argv = [a.format(**values) for a in args]
    if argv[0] in ("pretrain", "train-encoder", "train-mtl"):
        argv[1:1] = ["--max-steps", "1", "--device", "cpu"]
    before = digests(hostile, home, cwd)
    result = runner.invoke(app, argv)
    assert_refused(result, message.format(**values))
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written (a search's cache is elsewhere)
    assert digests(hostile, home, cwd) == before


def test_export_overwrite_keeps_every_byte_it_did_not_write(
    hostile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite into a folder holding an export and a file of the user's, and into the
    working folder holding an export: refused, every byte still there; then a folder holding
    only an earlier export is replaced by the new one."""
    need("onnxscript", "onnx")
    mine = tmp_path / "mine"
    shutil.copytree(hostile / "export", mine)
    (mine / "thesis.tex").write_text("years of work\n")
    here = tmp_path / "here"
    shutil.copytree(hostile / "export", here)
    (here / "data.csv").write_text("a,b\n")
    monkeypatch.chdir(here)
    before = digests(mine, here)
    for target in (str(mine), "."):
        result = runner.invoke(app, ["export", str(hostile / "run"), "-o", target, "--overwrite"])
        assert result.exit_code == 2, result.output
    assert digests(mine, here) == before
    old = tmp_path / "old"
    shutil.copytree(hostile / "export", old)
    (old / "model_int8.onnx").write_bytes(b"an earlier export's int8 graph")
    result = runner.invoke(app, ["export", str(hostile / "run"), "-o", str(old), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in old.iterdir()) == [
        "model.onnx", "sentcli_export.json", "tokenizer.json"
    ]  # fmt: skip


def test_a_second_export_into_the_same_folder_waits_for_none(hostile: Path, tmp_path: Path) -> None:
    """Two exports into one folder: while one holds the folder's lock the other is refused
    (it used to print success and lose one of the two)."""
    need("onnxscript", "onnx")
    out = tmp_path / "x"
    with ckpt.run_lock(out):
        result = runner.invoke(app, ["export", str(hostile / "run"), "-o", str(out)])
    assert_refused(result, f"{out} is being written by process {os.getpid()}")
    assert not out.exists()


@pytest.mark.slow
def test_a_million_layer_config_exits_2_fast_under_a_memory_cap(hostile: Path) -> None:
    """The lying config in a fresh process limited to 4 GiB of address space: refused from
    the weights' header in seconds, never an allocation until the machine runs out."""
    cap = (
        "import resource, sys, runpy; "
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
        "sys.argv = ['sentcli', 'embed', sys.argv[1], '-m', sys.argv[2]]; "
        "runpy.run_module('sentcli', run_name='__main__')"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", cap, str(hostile / "ok.txt"), str(hostile / "layers")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert time.perf_counter() - start < 5 + 10  # 5 s, plus the interpreter's start-up
    assert done.stderr.count("\n") == 1 and LIES["layers"] in done.stderr


def test_a_full_disk_during_a_save_is_one_line(
    tmp_path: Path, tokenizer_path: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's writer says only "unexpected pos" when the disk fills (safetensors names the
    OS error): either way one line, exit 2, naming the folder."""
    import torch

    args = ["pretrain", str(corpus_file), "--tokenizer", str(tokenizer_path), "--max-steps", "2"]
    args += ["--device", "cpu", "-q"]

    def torch_full(obj: object, f: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 9 vs 4")

    monkeypatch.setattr(torch, "save", torch_full)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(9, 9, 0))
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "a")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]  # after the line that said training started
    assert last.startswith("error: cannot write") and "train_state.next.pt: no space" in last

    def safetensors_full(*a: object, **k: object) -> None:
        raise RuntimeError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(ckpt, "save_file", safetensors_full)
    monkeypatch.setattr(torch, "save", lambda obj, f: Path(f).write_bytes(b"state"))
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "model.safetensors: no space left on its disk" in result.stderr.splitlines()[-1]


def test_blank_lines_are_labelled_in_place_and_counted(tmp_path: Path) -> None:
    lines = tmp_path / "in.txt"
    lines.write_text("great movie\n\n   \nawful film\n", "utf-8")
    result = runner.invoke(app, ["predict", str(lines), "--task", "sentiment", "-q"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4  # every line keeps its row
    assert result.stderr.splitlines() == [
        "warning: 2 of 4 texts were blank (empty or whitespace); each still has its row, in "
        "input order"
    ]


def test_read_only_runs_still_show_results_and_say_the_plots_were_not_written(
    hostile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run folder that cannot be written (root ignores permissions, so the plot writer is
    made to fail as it would there): evaluate still prints the STS scores and report its
    tables, each with one warning about the plots."""
    from sentcli import metrics

    run = tmp_path / "run"
    shutil.copytree(hostile / "run", run)

    def read_only(fig: object, path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(metrics, "save_figure", read_only)
    result = runner.invoke(app, ["evaluate", "-m", str(run), "--task", f"sts={DATA / 'stsb'}"])
    assert result.exit_code == 0, result.output
    assert "sts (" in result.stdout and "Spearman" in result.stdout
    assert (
        result.stderr.startswith("warning:") and "not written (Permission denied)" in result.stderr
    )
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "topic" in result.stdout and "plots rewritten" not in result.stdout
    assert "not rewritten (Permission denied)" in result.stderr


def test_build_tokenizer_writes_other_files_into_a_run_folder(hostile: Path) -> None:
    out = hostile.parent / "tokrun"
    shutil.copytree(hostile / "run", out)
    result = runner.invoke(
        app, ["build-tokenizer", str(DATA / "ag_news"), "--vocab-size", "300", "-q",
              "-o", str(out / "tok2.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match="give --task NAME=SOURCE"):
        api.train_encoder(None, out / "x")


def test_resume_names_the_tasks_it_keeps(
    tmp_path: Path, tokenizer_path: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    events: list[object] = []
    opts = {**FAST, "max_steps": 1}
    api.train_encoder(f"topic={topic_dir}", tmp_path / "r", tokenizer=tokenizer_path, options=opts)
    api.train_encoder(f"topic={sentiment_dir}", tmp_path / "r", resume=True, on_event=events.append)
    warned = [e.message for e in events if type(e).__name__ == "TrainWarning"]  # type: ignore[attr-defined]
    assert any(
        f"continues with the run's own tasks (topic={topic_dir}); ignored: --task topic="
        f"{sentiment_dir}" in w
        for w in warned
    ), warned


def test_the_api_takes_str_paths_and_either_task_form(
    tmp_path: Path, tokenizer_path: Path, topic_dir: Path, corpus_file: Path
) -> None:
    opts = {**FAST, "max_steps": 1}
    with pytest.raises(ConfigError, match="give the sources as a list"):
        api.build_tokenizer(str(corpus_file), str(tmp_path / "t.json"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="give the sources as a list"):
        api.pretrain(str(corpus_file), str(tmp_path / "lm"), str(tokenizer_path))  # type: ignore[arg-type]
    one = api.train_encoder(
        api.TaskConfig("topic", str(topic_dir)), str(tmp_path / "a"), tokenizer=str(tokenizer_path),
        options=opts,
    )  # fmt: skip
    two = api.train_mtl(
        f"topic={topic_dir}", str(tmp_path / "b"), tokenizer=str(tokenizer_path), options=opts
    )
    assert one.config.tasks[0].name == two.config.tasks[0].name == "topic"
    out = api.embed(str(corpus_file), str(tmp_path / "v.npy"), str(tmp_path / "a"))
    assert out.stats.texts == len(np.load(tmp_path / "v.npy"))
    rows = read_rows(DATA / "ag_news" / "test.csv.gz", 3)
    write_csv(tmp_path / "t.csv", rows)
    assert api.evaluate(str(tmp_path / "a"), [api.TaskConfig("topic", str(tmp_path / "t.csv"))])


def test_the_matrix_table_shows_control_characters_as_escapes(tmp_path: Path) -> None:
    """A text holding an escape sequence (it would recolour or clear the terminal) and a bell
    is shown as \\x1b…, never sent to the terminal as it is."""
    lines = tmp_path / "two.txt"
    lines.write_text("red \x1b[31malert\x1b[0m here\nbell \x07 and text\n", "utf-8")
    env = {"TTY_COMPATIBLE": "1", "COLUMNS": "120", "NO_COLOR": "1"}
    args = ["similarity", "--matrix", str(lines), "--plot", str(tmp_path / "m.png"), "-q"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "\\x1b[31malert\\x1b[0m" in result.stdout and "bell \\x07 and" in result.stdout
    assert "\x1b[31m" not in result.stdout and "\x07" not in result.stdout
