"""Mutation testing of the core modules (`make mutate`): for each module, mutmut 3 mutates
it and runs each mutant against that module's own unit tests (UNITS; mutmut picks, per
mutated function, those of the tests that call it), in a workspace of its own under
.mutate/ (mutmut reads its settings from the working folder's pyproject.toml). A module
with more mutants than --sample gets a seeded random sample of them (the same sample on
every run of the same code). Prints the score per module and the survivors.

Usage: python -m scripts.mutate [--sample 120] [--seed 0] [--only NAME,...] [--children 2]

Not part of CI (about 25 minutes on 2 cores): run it before a release and after a
refactor, and put its table in docs/development.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import random
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutate"
MUTMUT = [sys.executable, "-m", "mutmut"]


@dataclass
class Module:
    """A core module: the files mutmut mutates, which of their mutants count (mutmut names
    them module.x_function__mutmut_N or module.xǁClassǁmethod__mutmut_N) and its tests."""

    files: list[str]
    mutants: list[str]
    tests: list[str]
    exclude: list[str] = field(default_factory=list)
    sample: int | None = None
    """At most this many of its mutants (default: --sample)."""


UNITS: dict[str, Module] = {
    "model": Module(  # mutmut's recording trampolines are not traceable: no graph-break test
        ["sentcli/model.py"],
        ["sentcli.model.*"],
        [
            "tests/test_model.py",
            "--deselect",
            "tests/test_model.py::test_bf16_training_attention_traces_without_a_graph_break",
        ],
    ),  # fmt: skip
    "freeze": Module(["sentcli/freeze.py"], ["sentcli.freeze.*"], ["tests/test_freeze.py"]),
    "metrics": Module(  # the computations; the plots are checked by looking at them
        ["sentcli/metrics.py"],
        [
            f"sentcli.metrics.x_{f}__*"
            for f in (
                "classification_metrics",
                "history_of",
                "throughput",
                "grad_warnings",
                "loss_curves",
                "grad_series",
                "headlines",
                "selection_score",
                "best_eval",
                "score_curves",
                "matrix_range",
            )
        ]
        + ["sentcli.metrics.x_grad_summary__*"],
        ["tests/test_metrics.py"],
    ),
    "objectives": Module(  # every kind's objective, and how a step combines them
        ["sentcli/objectives/*", "sentcli/training/multitask.py"],
        ["sentcli.objectives.*", "sentcli.training.multitask.x_plan_steps__*"]
        + ["sentcli.training.multitask.x_weighted_loss__*"],
        ["tests/test_objectives.py"],
        # the plots are checked by looking at them; the Matryoshka wrapper is the vectors
        # unit's, against its own tests
        exclude=["*ǁplot__*", "sentcli.objectives.matryoshka.*"],
    ),
    "vectors": Module(  # int8 ranges and codes, binary codes, the Matryoshka prefixes
        ["sentcli/inference/vectors.py", "sentcli/objectives/matryoshka.py"],
        ["sentcli.inference.vectors.*", "sentcli.objectives.matryoshka.*"],
        [
            "tests/test_vectors.py",
            "-k",
            "prefix or matryoshka_loss or bad_matryoshka or matryoshka_metrics or "
            "matryoshka_validation or int8 or binary or ranges_files or matryoshka_training or "
            "command_line_and_its_refusals or matryoshka_wrapper",  # the 2 before: Matryoshka's
            # data, the fingerprint
        ],
        exclude=["*ǁplot__*"],
    ),
    "loop": Module(  # the per-group gradient norms and clipping of every training step
        ["sentcli/training/loop.py"],
        ["sentcli.training.loop.xǁGroupNormsǁ*"],
        ["tests/test_train.py::test_group_norms_match_a_manual_computation_then_clip"],
    ),
    "masking": Module(
        ["sentcli/training/lm.py"],
        ["sentcli.training.lm.x_mask_tokens__*"],
        ["tests/test_train.py::test_mask_tokens_picks_its_share_and_splits_it_80_10_10"],
    ),
    "batching": Module(
        ["sentcli/data/batching.py"],
        ["sentcli.data.batching.*"],
        ["tests/test_batching.py"],
    ),
    "similarity": Module(
        ["sentcli/inference/similarity.py"],
        ["sentcli.inference.similarity.*"],
        [
            "tests/test_similarity.py::test_similarity_streams_pair_cosines_in_order",
            "tests/test_similarity.py::"
            "test_pair_cosines_and_the_matrix_refuse_and_limit_with_the_default_model",
            "tests/test_similarity.py::"
            "test_similarity_library_calls_keep_their_inputs_outputs_and_events",
        ],
    ),
    "search": Module(  # its tests embed corpora: a smaller sample keeps the run in budget
        ["sentcli/inference/search.py"],
        ["sentcli.inference.search.*"],
        ["tests/test_search.py"],
        sample=80,
    ),
}

FLOAT_TYPE = (
    "float32 against the input's own float type: the codes round alike, and the sink's sums "
    "are float64 either way"
)
EQUIVALENT = [
    (
        r"target\.float\(\) if d == target\.shape\[-1\] else",
        r"if \(d == target\.shape\[-1\]\) and False else",
        "the teacher's vectors are stored L2-normalised: normalising all of them again "
        "changes nothing",
    ),
    (
        r"start = block_start if j == 0 else start",
        r"if j != 0 else start|if \(j == 0\) and False else start",
        "on one process every block starts at 0 (tests/test_dist.py trains under two)",
    ),
    (
        r"zero = torch\.zeros\(1, device=cos\.device, dtype=diff\.dtype\)",
        r"zero = torch\.zeros\(1, device=cos\.device, (dtype=None)?\)",
        "the unit tests' cosines are float32, torch's default dtype",
    ),
    (
        r"np\.array\(enc\.target, dtype=np\.float32\)",
        r"np\.array\(enc\.target, \)",
        "the teacher's vectors are written as float32: the copy's dtype is already that",
    ),
    (
        r"if sink\.low is None or sink\.high is None or sink\.total is None",
        r"sink\.low is None and sink\.high is None",
        "the sink sets its low, high and total together: one is None only when all are",
    ),
    (
        r"sink\.add\(np\.asarray\(block, dtype=np\.float32\)\)",
        r"sink\.add\(np\.asarray\(block, dtype=None\)\)",
        "float32 against the input's own float type: minima and maxima are the same values, "
        "and the sink sums in float64 either way",
    ),
    (
        r'k\[1\]\.outputs != "logits"',
        r'k\[1\]\.outputs != "LOGITS"',
        "a labelled task listed twice keeps its first place and its size in the dict",
    ),
    (r'"utf-8"', r'"UTF-8"', "encoding names are case-insensitive"),
    (
        r"device=ids\.device",
        r"device=None|\(ids\.shape, \)|randint\([^)]*ids\.shape, \)",
        "the device only matters on a GPU (tests/test_cuda.py); the unit tests run on the CPU",
    ),
    (
        r"torch\.rand\(.*\) < probability",
        r"<= probability",
        "a continuous draw equals the threshold with probability zero",
    ),
    (
        r"roll < 0\.[89]|roll >= 0\.8",
        r"roll <= 0\.[89]|roll > 0\.8",
        "a continuous draw equals the threshold with probability zero",
    ),
    (
        r"strict=True",
        r"zip\([^)]*, \)|strict=None|strict=False",
        "the zipped sequences have one length by construction (strict only guards it)",
    ),
    (r"ensure_ascii=False", r"ensure_ascii=None", "None is false as False is"),
    (
        r'array\("q"',
        r'array\("Q"',
        "offsets are non-negative and below 2^63, and are read back as int64: the same bytes",
    ),
    (r"np\.zeros\(0, dtype=np\.uint8\)", r"np\.zeros\(0, \)", "an empty array holds no bytes"),
    (
        r"device = resolve_device\(opts\.device\)\.type",
        r"device = None",
        "where there is no GPU every device resolves to the CPU: one key for all "
        "(tests/test_cuda.py)",
    ),
    (
        r"disk_full\(e, cache\)",
        r"disk_full\(e, None\)",
        "an OSError says by its errno whether the disk is full: the folder is asked only "
        "about torch's RuntimeError",
    ),
    (
        r"ignore_errors=True",
        r"ignore_errors=False|rmtree\(tmp, \)",
        "removes a folder this command made and no other process touches",
    ),
    (r'float\("-inf"\)', r'float\("-INF"\)', "float() reads infinity in any case"),
    (r'kind="stable"', r'kind="STABLE"', "NumPy reads the sort kind in any case"),
    (
        r"iter_text_batches\(ds, (10_000|1000)?|batch_size: int = 1000",
        r"iter_text_batches\(ds, (10001|1001|\))|batch_size: int = 1001",
        "the size of a read: the same rows, in the same order",
    ),
    (r"skip_empty=False", r"skip_empty=None", "None is false as False is"),
    (
        r"chunk: int = 1024",
        r"chunk: int = 1025",
        "the number of anchors scored at a time: the same ranks, in the same order",
    ),
    (
        r"PAD_ID, dtype=np\.int64\)",
        r"PAD_ID, (dtype=None)?\)",
        "NumPy's default integer is int64 on Linux, where the tests run",
    ),
    (r'device\.type == "cuda"', r'"XXcudaXX"|"CUDA"', "a GPU-only branch (tests/test_cuda.py)"),
    (r"torch\.cuda\.max_memory_allocated", r".", "a GPU-only branch (tests/test_cuda.py)"),
    (
        r'attention_mask\.device\.type != "cpu"',
        r'attention_mask\.device\.type == "cpu"',
        "masking keys that are all real changes no score: the check only skips the mask",
    ),
    (
        r"key_padding_mask\(attention_mask, additive\)",
        r"key_padding_mask\(attention_mask, \)",
        "the additive and the boolean mask give the same scores (ONNX runs the first faster)",
    ),
    (
        r'by: str = "val-loss"\) -> tuple\[int, float\] \| None',
        r'by: str = "XXval-lossXX"\)',
        'best_eval: any rule but "metric" is the validation-loss rule',
    ),
    (
        r"zero_division=0\.0",
        r"zero_division=0\.0\)|labels=labels, \)|average=\"macro\", \)",
        "scikit-learn's default also scores a class without predictions 0 (and warns)",
    ),
    (
        r"run_inference\(file, None, model, \(\), quiet, make, on_event, source\)",
        r"run_inference\((None, None, model, \(\)|file, None, model, None|[^)]*, \)$|"
        r"[^)]*on_event, None\))",
        "the matrix's rows come from `source`; the file name and output formats serve only "
        "an output file, and the matrix writes none",
    ),
    (
        r"device = next\(model\.parameters\(\)\)\.device|device=(cos|t|anchors)\.device",
        r"device = None|device=None|torch\.zeros\(1, dtype=diff\.dtype\)|dtype=torch\.bool, \)"
        r"|arange\(len\(anchors\), \)",
        "the device only matters on a GPU (tests/test_cuda.py); the unit tests run on the CPU",
    ),
    (
        r"F\.(normalize|cosine_similarity)\(.*dim=-1\)",
        r"F\.(normalize|cosine_similarity)\([^=]*, \)|dim=\+1\)",
        "on [rows, width] vectors the default dim (1) is the last one",
    ),
    (
        r"a = anchors / np\.maximum",
        r"1\.000000000001|a = anchors \* np\.maximum",
        "an anchor's length scales all its cosines alike: the order of its candidates stays",
    ),
    (
        r"_global\(.*, n, ranks\)|None, batch\.n, self\.ranks",
        r"_global\(.*, None, ranks\)|None, None, self\.ranks",
        "the global row count sizes the gather across ranks; one process gathers nothing "
        "(tests/test_dist.py trains under two)",
    ),
    (
        r"np\.array\(enc\.target, dtype=np\.float32\)",
        r"dtype=None\)",
        "the teacher's vectors are written as float32: the copy has that dtype already",
    ),
    (
        r"batch\.target, batch\.n, self\.ranks",
        r"batch\.target, None, self\.ranks",
        "scored pairs' losses (CoSENT, cosine-MSE) read no global batch size: only the "
        "in-batch negatives gather one",
    ),
    (
        r"self\.patterns\.get\(key\)|self\.patterns\[key\] = pattern",
        r"pattern = None$|\.get\(None\)|self\.patterns\[key\] = None",
        "the cache of gradient-group indexes only saves work: without it each step computes "
        "the same index again",
    ),
    (
        r"torch\.tensor\(idx, device=self\.device\)|self\.device = device",
        r"device=None|torch\.tensor\(idx, \)|self\.device = None",
        "the device only matters on a GPU (tests/test_cuda.py); the unit tests run on the CPU",
    ),
    (
        r"torch\.nn\.init\.normal_\(p, mean=0\.0, std=std\)",
        r"normal_\(p, std=std\)",
        "normal_'s mean is 0 by default",
    ),
    (
        r"mask = attention_mask\.unsqueeze\(-1\)\.to\(hidden\.dtype\)",
        r"\.to\(None\)",
        "a boolean mask multiplies and counts as its float copy does",
    ),
    (
        r'or attention_mask\.device\.type != "cpu"',
        r'!= "CPU"|!= "cpu" and torch\.compiler',
        "off the eager CPU path the batch is masked whatever it holds, and masking keys that "
        "are all real changes no score (the compiled path: tests/test_train.py, slow tier)",
    ),
    (
        r"8 << k for k in range\(16\)",
        r"range\(17\)",
        "a bucket past 8 << 15 = 262,144 tokens is cut by the block size anyway",
    ),
    (
        r"total = weighted\[0\] if len\(weighted\) == 1",
        r"and False",
        "one task's loss summed alone is itself: the shortcut only saves two kernels",
    ),
    (
        r"a = anchors / np\.maximum\(np\.linalg\.norm\(anchors, axis=1",
        r"norm\(anchors, keepdims=True\)",
        "every anchor scaled by one constant ranks its candidates the same",
    ),
    (
        r'order = np\.argsort\(x, kind="stable"\)',
        r"kind=None",
        "tied values get their mean rank whatever order the sort leaves them in",
    ),
    (
        r"start = block_start if j == 0 else start|\+ start$",
        r"or True|- start$",
        "one process's block starts at row 0 (tests/test_dist.py trains under two)",
    ),
    (
        r"if len\(y_true\) else 0\.0",
        r"or True|else 1\.0",
        "scikit-learn refuses empty inputs before this line",
    ),
    (
        r'path\.write_text\(text, encoding="utf-8"\)',
        r"path\.write_text\(text, \)",
        "the ranges file is ASCII JSON (json.dumps escapes the rest): every locale writes it alike",
    ),
    (
        r"np\.asarray\(vectors, dtype=np\.float32\) / ranges\.scale",
        r"np\.asarray\(vectors, dtype=None\) / ranges\.scale",
        FLOAT_TYPE,
    ),
    (
        r"np\.asarray\(queries, dtype=np\.float32\) \* ranges",
        r"np\.asarray\(queries, \) \* ranges",
        FLOAT_TYPE,
    ),
    (
        r"sink\.add\(np\.asarray\(block, dtype=np\.float32\)\)",
        r"sink\.add\(np\.asarray\(block, \)\)",
        FLOAT_TYPE,
    ),
    (
        r"len\(vectors\) if rows is None else len\(rows\)",
        r"\(rows is None\) or True",
        "past the chosen rows the blocks are empty, and the sink skips empty blocks",
    ),
    (
        r"self\.inner\.load\(shape, splits, names, resume\)",
        r"self\.inner\.load\(shape, splits, None, resume\)",
        "label names are read by classification only; Matryoshka wraps vector objectives",
    ),
    (
        r"width = outputs\[0\]\.shape\[1\]",
        r"width = None",
        "the full-width cut is the whole vector, scored again to the same values",
    ),
    (
        r"cut\(outputs, d\), False\)",
        r"cut\(outputs, d\), None\)",
        "`full` is only tested for truth: None is False",
    ),
    (
        r'encoding="utf-8"\)',
        r"encoding=None\)",
        "the ranges file is ASCII JSON (json.dumps escapes the rest): every locale writes it alike",
    ),
    (
        r"np\.asarray\(vectors, dtype=np\.float32\) / ranges",
        r"np\.asarray\(vectors, \) / ranges",
        "float64 input divides and rounds to the same int8 codes (the scale is float32)",
    ),
    (
        r"device=batch\.ids\.device",
        r"device=None",
        "the device only matters on a GPU (tests/test_cuda.py); the unit tests run on the CPU",
    ),
    (
        r"self\.inner\.load\(shape, splits, names, resume\)",
        r"self\.inner\.load\(shape, splits, None, resume\)",
        "label names are read by classification only; Matryoshka wraps vector objectives",
    ),
    (
        r"width = outputs\[0\]\.shape\[1\]",
        r"width = outputs\[1\]\.shape\[1\]",
        "every side of a pair task has the model's width",
    ),
]
"""Mutants that cannot change what the tests can observe, by the line they change (its
old and new text) and why; the run lists each one it finds."""

KILLED = {"killed", "timeout", "segfault", "suspicious"}
"""A timeout or a crash also fails the tests."""


ENTRIES = ("sentcli", "tests", "data", "bench", "scripts", "docs")


def snapshot() -> Path:
    """.mutate/snapshot: the code and tests as they are when the run starts (a run takes a
    while; edits made meanwhile must not reach the modules tested later)."""
    folder = WORK / "snapshot"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__")
    for entry in ENTRIES:
        shutil.copytree(ROOT / entry, folder / entry, ignore=ignore)
    return folder


def workspace(name: str, module: Module, code: Path) -> Path:
    """.mutate/NAME: the snapshot's code, tests and data (linked) and a pyproject.toml whose
    [tool.mutmut] mutates `module` against its tests."""
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for entry in ENTRIES:
        (folder / entry).symlink_to(code / entry)
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    markers = ", ".join(f'"{m}"' for m in pytest_ini["ini_options"]["markers"])
    (folder / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\npythonpath = ["."]\n'
        f"markers = [{markers}]\n\n"
        "[tool.mutmut]\n"
        'source_paths = ["sentcli"]\n'
        f"only_mutate = {module.files!r}\n"
        'also_copy = ["data", "bench", "scripts", "docs"]\n'
        'pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:cacheprovider", "-m", "not slow"]\n'
        f"pytest_add_cli_args_test_selection = {module.tests!r}\n"
        'process_isolation = "forkserver"\n'
    )
    return folder


def equivalent(folder: Path, name: str) -> str | None:
    """Why mutant `name` is equivalent (EQUIVALENT), or None."""
    diff = subprocess.run(
        [*MUTMUT, "show", name], cwd=folder, capture_output=True, text=True
    ).stdout.splitlines()
    old = [x[1:] for x in diff if x.startswith("-") and not x.startswith("---")]
    new = [x[1:] for x in diff if x.startswith("+") and not x.startswith("+++")]
    for before, after, why in EQUIVALENT:
        if any(re.search(before, x) for x in old) and any(re.search(after, x) for x in new):
            return why
    return None


def results(folder: Path) -> dict[str, str]:
    """Every generated mutant's status, by name."""
    done = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=folder, capture_output=True, text=True
    )
    found = re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", done.stdout, re.M)
    return {name: status.strip() for name, status in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=120, help="mutants per module at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated modules of UNITS")
    parser.add_argument("--children", type=int, default=2, help="mutants run at once")
    args = parser.parse_args()
    rows: list[str] = []
    survivors: list[str] = []
    equivalents: list[str] = []
    code = snapshot()
    for name, module in UNITS.items():
        if args.only and name not in args.only.split(","):
            continue
        start = time.perf_counter()
        folder = workspace(name, module, code)
        # generate every mutant: a filter that matches none stops mutmut right after
        subprocess.run([*MUTMUT, "run", "-"], cwd=folder, capture_output=True)
        every = sorted(
            n
            for n in results(folder)
            if any(fnmatch.fnmatchcase(n, p) for p in module.mutants)
            and not any(fnmatch.fnmatchcase(n, e) for e in module.exclude)
        )
        rng = random.Random(f"{args.seed}:{name}")
        chosen = sorted(rng.sample(every, min(module.sample or args.sample, len(every))))
        run = [*MUTMUT, "run", "--max-children", str(args.children), *chosen]
        subprocess.run(run, cwd=folder, capture_output=True, check=False)
        status = results(folder)
        got = [status.get(n, "not run") for n in chosen]
        killed = sum(s in KILLED for s in got)
        alive = [n for n, s in zip(chosen, got, strict=True) if s not in KILLED]
        why = {n: equivalent(folder, n) for n in alive}
        same = [n for n in alive if why[n]]
        left = [n for n in alive if not why[n]]
        survivors += [f"{n}: {status.get(n, 'not run')}" for n in left]
        equivalents += [f"{n}: {why[n]}" for n in same]
        real = len(got) - len(same)
        score = 100 * killed / real if real else 100.0
        equivalent_count = len(same)
        minutes = (time.perf_counter() - start) / 60
        rows.append(
            f"| {name} | {len(every)} | {len(got)} | {killed} | {len(left)} | {equivalent_count} | "
            f"{score:.1f} % | {minutes:.1f} min |"
        )
        # each module's list as it ends, so that a run stopped part-way keeps what it found
        lines = [f"  equivalent {n}: {why[n]}" for n in same] + [f"  not killed {n}" for n in left]
        print("\n".join([rows[-1], *lines]), flush=True)
    print("\n| module | mutants | run | killed | not killed | equivalent | score | time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print("\nEquivalent:")
    print("\n".join(f"  {s}" for s in equivalents))
    print("\nNot killed (`mutmut show NAME` in .mutate/MODULE prints one):")
    print("\n".join(f"  {s}" for s in survivors))


if __name__ == "__main__":
    main()
