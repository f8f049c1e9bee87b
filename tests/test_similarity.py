"""Similarity objectives: the losses against plain references, the metrics, and training
them beside classification (schedules, freeze modes, --resume, the CLI tables)."""

import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sentcli import api
from sentcli.cli import app
from sentcli.config import InferenceOptions, TaskConfig
from sentcli.dist import Dist
from sentcli.errors import ConfigError
from sentcli.events import StepLog

from helpers import DATA, FAST

OPTS = {
    **{k: v for k, v in FAST.items() if k != "dropout"},
    "batch_size": 16,
    "max_samples_per_task": 96,
    "log_every": 2,
    "eval_every": 6,
}


def sts_tasks() -> list[TaskConfig]:
    return [
        TaskConfig("topic", str(DATA / "ag_news")),
        TaskConfig("sts", str(DATA / "stsb")),
        TaskConfig("simcse", str(DATA / "imdb_unsup")),
    ]


@pytest.mark.parametrize("schedule", ["round-robin", "joint", "proportional"])
def test_similarity_tasks_train_beside_classification(
    tmp_path: Path, tokenizer_path: Path, schedule: str
) -> None:
    opts = {**OPTS, "schedule": schedule, "max_steps": 12, "freeze": "embeddings"}
    run = api.train_mtl(sts_tasks(), tmp_path / "run", tokenizer=tokenizer_path, options=opts)
    first, last = run.history[0], run.history[-1]
    assert -1 <= first["sts/spearman"] <= 1 and "simcse/val_loss" in first
    assert last["sts/train_loss"] > 0 and last["simcse/train_loss"] > 0
    assert run.test["sts"]["kind"] == "scored" and run.test["sts"]["pairs"] == 750
    assert (tmp_path / "run" / "report" / "similarity_sts.png").is_file()
    kinds = {t.name: t.kind for t in run.config.tasks}
    assert kinds == {"topic": "classification", "sts": "scored", "simcse": "text"}
    assert run.config.tasks[1].score_range == [0.0, 5.0]


def test_token_embeddings_start_large_only_when_every_task_is_a_similarity_task(
    tmp_path: Path, tokenizer_path: Path
) -> None:
    opts = {**OPTS, "max_steps": 1}
    cases = {"sts": (sts_tasks()[1:2], {}, 1.0), "mixed": (sts_tasks()[:2], {}, 0.02)}
    cases["given"] = (sts_tasks()[1:2], {"embed_std": 0.3}, 0.3)
    for name, (tasks, extra, std) in cases.items():
        run = api.train_mtl(
            tasks, tmp_path / name, tokenizer=tokenizer_path, options={**opts, **extra}
        )
        assert run.config.model.embed_std == std
        wte = load_file(tmp_path / name / "model.safetensors")["trunk.wte.weight"]
        assert float(wte.std()) == pytest.approx(std, rel=0.05)  # one step moves it little
        saved = (tmp_path / name / "config.json").read_text()
        assert f'"embed_std": {std}' in saved


def test_predict_with_a_run_of_only_similarity_tasks_says_what_to_use(
    tmp_path: Path, tokenizer_path: Path, corpus_file: Path
) -> None:
    run = tmp_path / "sts"
    api.train_mtl(sts_tasks()[1:2], run, tokenizer=tokenizer_path, options={**OPTS, "max_steps": 1})
    result = CliRunner().invoke(app, ["predict", str(corpus_file), "--model", str(run)])
    assert result.exit_code == 2
    assert "its tasks are similarity tasks: compare its vectors with similarity or search" in (
        result.output
    )


def test_simcse_without_dropout_is_refused(tmp_path: Path, tokenizer_path: Path) -> None:
    with pytest.raises(ConfigError, match="SimCSE.*--dropout is 0"):
        opts = {**OPTS, "dropout": 0.0}
        api.train_mtl(sts_tasks()[2:], tmp_path / "r", tokenizer=tokenizer_path, options=opts)


def test_freeze_modes_that_leave_a_similarity_task_nothing_are_refused(
    tmp_path: Path, tokenizer_path: Path
) -> None:
    for freeze, message in (("backbone", "leaves task sts"), ("head:sts", "unknown or invalid")):
        with pytest.raises(ConfigError, match=message):
            api.train_mtl(
                sts_tasks()[:2], tmp_path / freeze.replace(":", "_"), tokenizer=tokenizer_path,
                options={**OPTS, "freeze": freeze},
            )  # fmt: skip


@pytest.mark.parametrize("loss", ["cosent", "cosine-mse"])
def test_interrupted_similarity_run_resumes_to_the_same_weights(
    tmp_path: Path, tokenizer_path: Path, loss: str
) -> None:
    def stop_after_step_3(event: object) -> None:
        if isinstance(event, StepLog) and event.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    opts = {**OPTS, "similarity_loss": loss, "max_steps": 10}
    tasks = sts_tasks()[1:]
    api.train_mtl(tasks, tmp_path / "full", tokenizer=tokenizer_path, options=opts)
    cut = api.train_mtl(
        tasks, tmp_path / "cut", tokenizer=tokenizer_path, options=opts, on_event=stop_after_step_3
    )
    assert cut.interrupted and cut.steps == 4
    again = api.train_mtl([], tmp_path / "cut", resume=True)
    assert again.steps == 10
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        again.history[-1]["sts/spearman"]
        == api.report(tmp_path / "full")["history"][-1]["sts/spearman"]
    )


def test_cli_tables_show_each_kind_its_scores(tmp_path: Path, tokenizer_path: Path) -> None:
    settings = {**OPTS, "max_steps": 6}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if k != "dropout"]
    result = CliRunner().invoke(
        app,
        [
            "train-mtl", "--task", f"topic={DATA / 'ag_news'}", "--task", f"sts={DATA / 'stsb'}",
            "--tokenizer", str(tokenizer_path), "-o", str(tmp_path / "run"), "--quiet", *flags,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Spearman×100" in result.output and "accuracy" in result.output
    assert "sts validation: Spearman×100" in result.output and "750 pairs" in result.output
    report = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert report.exit_code == 0 and "Spearman×100" in report.output


def test_cli_pair_columns_and_score_column_name_odd_columns(
    tmp_path: Path, tokenizer_path: Path
) -> None:
    import csv
    import gzip

    with gzip.open(DATA / "stsb" / "train.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:121]
    odd = tmp_path / "odd.tsv"  # odd names, a 1-10 scale, tab-separated
    with open(odd, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["left side", "right side", "rating"])
        w.writerows([a, b, f"{1 + float(s) * 9 / 5:.2f}"] for a, b, s, *_ in rows)
    settings = {**OPTS, "max_steps": 4}
    skip = ("dropout", "max_samples_per_task")  # train-mtl's
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if k not in skip]
    base = ["train-encoder", "--task", f"sts={odd}", "--tokenizer", str(tokenizer_path), "-q"]
    result = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "a"), *flags])
    assert result.exit_code == 2 and "name them: --pair-columns A,B" in result.output
    named = ["--pair-columns", "left side,right side", "--score-column", "rating"]
    result = CliRunner().invoke(app, [*base, *named, "-o", str(tmp_path / "b"), *flags])
    assert result.exit_code == 0, result.output
    assert "Spearman×100" in result.output
    scored = ["evaluate", "-m", str(tmp_path / "b"), "--task", f"sts={odd}", *named]
    result = CliRunner().invoke(app, scored)  # evaluate names odd columns the same way
    assert result.exit_code == 0 and "odd.tsv, train, 120 pairs): Spearman" in result.output
    mse = ["--similarity-loss", "cosine-mse", "-o", str(tmp_path / "c")]
    result = CliRunner().invoke(app, [*base, *named, *mse, *flags])
    assert result.exit_code == 0, result.output
    config = api.report(tmp_path / "c")
    assert config["kind"] == "encoder"
    for bad, message in (
        (["--pair-columns", "right side,rating"], "holds double, not text; pass --pair-columns"),
        (
            ["--pair-columns", "left side,right side", "--score-column", "right side"],
            "not a number",
        ),
    ):
        result = CliRunner().invoke(app, [*base, *bad, "-o", str(tmp_path / "d"), *flags])
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("\n") == 1 and not (tmp_path / "d").exists()


def test_evaluate_scores_pairs_with_any_run_that_embeds(
    tmp_path: Path, tokenizer_path: Path, corpus_file: Path
) -> None:
    run = tmp_path / "sts"
    opts = {**OPTS, "max_steps": 4}
    trained = api.train_mtl(sts_tasks()[:2], run, tokenizer=tokenizer_path, options=opts)
    own = api.evaluate(run, precision="fp32")["tasks"]  # its own tasks: topic and sts
    assert own["sts"]["spearman"] == pytest.approx(trained.test["sts"]["spearman"], abs=1e-6)
    assert own["topic"]["accuracy"] == pytest.approx(trained.test["topic"]["accuracy"])
    assert Path(own["sts"]["plot"]) == run / "report" / "similarity_sts.png"
    lm = tmp_path / "lm"
    api.pretrain([str(corpus_file)], lm, tokenizer_path, {**FAST, "max_steps": 2})
    sts = TaskConfig("sts", str(DATA / "stsb"))
    got = api.evaluate(lm, [sts], plots=tmp_path / "plots")["tasks"]["sts"]
    assert got["split"] == "validation" and got["pairs"] == 750 and -1 <= got["pearson"] <= 1
    assert (tmp_path / "plots" / "similarity_sts.png").is_file()
    result = CliRunner().invoke(app, ["evaluate", "--model", str(lm)])
    assert result.exit_code == 2 and "give --task NAME=SOURCE with sentence pairs" in result.output
    topic = ["--task", f"topic={DATA / 'ag_news'}"]
    result = CliRunner().invoke(app, ["evaluate", "--model", str(lm), *topic])
    assert result.exit_code == 2 and "has no task heads" in result.output
    wrong = ["evaluate", "--model", str(run), "--task", f"sts={DATA / 'ag_news'}"]
    result = CliRunner().invoke(app, wrong)
    assert result.exit_code == 2 and "is a scored similarity task without a head" in result.output
    result = CliRunner().invoke(app, ["predict", str(corpus_file), "--model", str(run)])
    assert result.exit_code == 0  # its one head (topic); the similarity task has none
    result = CliRunner().invoke(app, ["predict", str(corpus_file), "-m", str(run), "--task", "sts"])
    assert result.exit_code == 2 and "has no task 'sts'" in result.output


def embed_vectors(run: Path, lines: Path, tmp_path: Path) -> np.ndarray:
    out = tmp_path / f"{lines.stem}.npy"
    api.embed(str(lines), out, run, options=InferenceOptions(device="cpu"))
    return np.load(out)


def test_similarity_streams_pair_cosines_in_order(
    tmp_path: Path, tokenizer_path: Path, corpus_file: Path
) -> None:
    run = tmp_path / "sts"
    api.train_mtl(sts_tasks()[1:2], run, tokenizer=tokenizer_path, options={**OPTS, "max_steps": 2})
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a man plays a guitar\nthe cat sleeps\nstocks fell\n")
    b.write_text("someone plays music\nthe cat sleeps\nrain today\n")
    invoke = CliRunner().invoke
    two = invoke(app, ["similarity", str(a), str(b), "-m", str(run), "-q", "--device", "cpu"])
    assert two.exit_code == 0, two.output
    cos = [float(x) for x in two.stdout.split()]
    assert len(cos) == 3 and cos[1] == pytest.approx(1.0, abs=1e-5) and max(cos) <= 1 + 1e-5
    # each pair's cosine is numpy's, of the vectors `embed` writes for the two files
    va, vb = (embed_vectors(run, f, tmp_path) for f in (a, b))
    np.testing.assert_allclose(cos, (va * vb).sum(axis=1), atol=2e-6)
    lefts, rights = a.read_text().splitlines(), b.read_text().splitlines()
    tabbed = "".join(f"{x}\t{y}\n" for x, y in zip(lefts, rights, strict=True))
    piped = invoke(app, ["similarity", "-", "-m", str(run), "-q", "--device", "cpu"], input=tabbed)
    assert piped.exit_code == 0 and piped.stdout == two.stdout
    table = tmp_path / "pairs.jsonl"
    table.write_text("".join(f'{{"sentence1": "{x}", "sentence2": "{y}"}}\n' for x, y in
                             [("the cat sleeps", "the cat sleeps")] * 2))  # fmt: skip
    out = tmp_path / "cos.txt"
    result = invoke(app, ["similarity", str(table), "-m", str(run), "-o", str(out), "-q"])
    assert result.exit_code == 0 and len(out.read_text().split()) == 2
    matrix = invoke(app, ["similarity", "--matrix", str(a), "-m", str(run), "--plot",
                          str(tmp_path / "m.png")])  # fmt: skip
    assert matrix.exit_code == 0, matrix.output
    assert (tmp_path / "m.png").is_file()
    # not a terminal: every value, as TSV rows; numpy's cosines of embed's vectors of a
    np.testing.assert_allclose(np.loadtxt(io.StringIO(matrix.stdout)), va @ va.T, atol=2e-6)
    texts, m, _ = api.similarity_matrix(str(a), run, options=InferenceOptions(device="cpu"))
    np.testing.assert_allclose(m, va @ va.T, atol=1e-6)
    assert texts == lefts
    shown = invoke(app, ["similarity", "--matrix", str(a), "-m", str(run), "--format", "json",
                         "--plot", str(tmp_path / "m.png")])  # fmt: skip
    assert json.loads(shown.stdout) == {"texts": lefts, "matrix": m.tolist()}
    for args, message in (
        ([str(a), str(corpus_file)], "give two files of the same length"),
        ([str(a)], "line 1 has no tab"),
        (["--matrix", str(corpus_file)], "--matrix is for a few sentences"),
        ([str(table), "--pair-columns", "sentence1,nope"], "no column 'nope'"),
    ):
        result = invoke(app, ["similarity", *args, "-m", str(run), "-q"])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_distillation_matches_a_teacher_of_another_width_through_a_cached_corpus(
    tmp_path: Path, tokenizer_path: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTCLI_CACHE", str(tmp_path / "cache"))
    teacher = tmp_path / "teacher"  # 24 wide; the student is 16 wide: a learned projection
    api.pretrain(
        [str(corpus_file)], teacher, tokenizer_path, {**FAST, "n_embd": 24, "max_steps": 2}
    )
    opts = {**OPTS, "teacher": str(teacher), "max_steps": 10, "log_every": 1}
    tasks = [TaskConfig("distill", str(corpus_file))]
    run = api.train_mtl(tasks, tmp_path / "full", tokenizer=tokenizer_path, options=opts)
    first, last = run.history[0]["distill/cosine"], run.history[-1]["distill/cosine"]
    assert last > first  # the student moved towards the teacher
    assert run.config.tasks[0].kind == "distill" and run.config.tasks[0].teacher_dim == 24
    cached = list((tmp_path / "cache" / "teacher").glob("*/vectors.npy"))
    assert len(cached) == 2  # train and validation texts, each computed once
    stamps = [p.stat().st_mtime_ns for p in cached]

    def stop(event: object) -> None:
        if isinstance(event, StepLog) and event.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    cut = api.train_mtl(
        tasks, tmp_path / "cut", tokenizer=tokenizer_path, options=opts, on_event=stop
    )
    assert cut.interrupted and [p.stat().st_mtime_ns for p in cached] == stamps  # reused
    api.train_mtl([], tmp_path / "cut", resume=True)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert "heads.distill.weight" in a and all(torch.equal(a[k], b[k]) for k in a)
    result = CliRunner().invoke(app, ["embed", str(corpus_file), "-m", str(tmp_path / "cut"), "-q"])
    assert result.exit_code == 0  # the run loads with its projection
    bad = {**opts, "teacher": str(tmp_path / "nope")}
    with pytest.raises(Exception, match="--teacher: .*nope is not a run folder"):
        api.train_mtl(tasks, tmp_path / "bad", tokenizer=tokenizer_path, options=bad)
    with pytest.raises(ConfigError, match="this run has none; add --task NAME=TEXTS"):
        pairs = sts_tasks()[1:2]  # a teacher without plain text to distill on
        api.train_mtl(pairs, tmp_path / "unused", tokenizer=tokenizer_path, options=opts)
    assert not (tmp_path / "unused").exists()


def test_teacher_vectors_resume_after_a_kill_at_the_first_missing_part(
    tmp_path: Path, tokenizer_path: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets import Dataset

    from sentcli.training import distill

    teacher = tmp_path / "teacher"
    api.pretrain([str(corpus_file)], teacher, tokenizer_path, {**FAST, "max_steps": 1})
    monkeypatch.setenv("SENTCLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(distill, "PART_ROWS", 100)
    texts = Dataset.from_dict({"text": corpus_file.read_text().splitlines()[:250]})
    calls: list[int] = []
    real = distill.apply_batched

    def counted(fn, seqs, *args):  # type: ignore[no-untyped-def]
        calls.append(len(seqs))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while computing the second part
        return real(fn, seqs, *args)

    monkeypatch.setattr(distill, "apply_batched", counted)
    with pytest.raises(KeyboardInterrupt):
        distill.teacher_vectors(teacher, texts, 32, "cpu", Dist())
    monkeypatch.setattr(distill, "apply_batched", lambda *a: calls.append(len(a[1])) or real(*a))
    vectors = distill.teacher_vectors(teacher, texts, 32, "cpu", Dist())
    assert calls == [100, 100, 100, 50]  # the first part was kept, not recomputed
    assert vectors.shape == (250, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not list((tmp_path / "cache").rglob("part-*.npy"))


def test_pair_cosines_and_the_matrix_refuse_and_limit_with_the_default_model(
    tmp_path: Path,
) -> None:
    """The library calls behind `similarity` (the default model, no training): what they
    refuse, word for word, and the matrix's limit of 100 sentences, from a file or stdin."""

    from sentcli.errors import ConfigError
    from sentcli.inference.similarity import MATRIX_MAX, cosine_matrix, pair_cosines

    opts = InferenceOptions(device="cpu", precision="fp32")
    a = tmp_path / "a.txt"
    a.write_text("a dog runs\na cat sleeps\n")
    with pytest.raises(ConfigError) as e:
        pair_cosines(str(a), None, None, None, ["one"], opts, None)
    assert str(e.value) == "--pair-columns one: give two columns, A,B"
    with pytest.raises(ConfigError) as e:
        pair_cosines("-", "-", None, None, None, opts, None)
    assert str(e.value) == "only one of the two inputs can be stdin (-)"
    out = tmp_path / "c.txt"
    result = pair_cosines(str(a), str(a), out, None, None, opts, None)
    assert [float(x) for x in out.read_text().split()] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert result.stats.texts == 4 and result.output == out
    many = tmp_path / "many.txt"
    many.write_text("".join(f"sentence number {i}\n" for i in range(MATRIX_MAX + 1)))
    with pytest.raises(ConfigError) as e:
        cosine_matrix(str(many), None, opts, None)
    assert str(e.value) == (
        f"{many} has 101 lines; --matrix is for a few sentences (at most 100): use "
        "`sentcli similarity A B` for pairs"
    )
    piped = replace_stdin(opts, "".join(f"line {i}\n" for i in range(MATRIX_MAX + 50)))
    with pytest.raises(ConfigError) as e:
        cosine_matrix("-", None, piped, None)
    assert str(e.value) == (
        "--matrix is for a few sentences (at most 100): use `sentcli similarity A B` for pairs"
    )
    exactly = tmp_path / "hundred.txt"
    exactly.write_text("".join(f"sentence {i}\n" for i in range(MATRIX_MAX)))
    texts, matrix, _ = cosine_matrix(str(exactly), None, opts, None)
    assert len(texts) == MATRIX_MAX and matrix.shape == (MATRIX_MAX, MATRIX_MAX)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    texts, matrix, _ = cosine_matrix("-", None, replace_stdin(opts, "a\nb\n"), None)
    assert texts == ["a", "b"] and matrix.shape == (2, 2)  # the stdin form


def replace_stdin(opts: InferenceOptions, text: str) -> InferenceOptions:
    import io
    from dataclasses import replace

    return replace(opts, stdin=io.BytesIO(text.encode()))


def test_similarity_library_calls_keep_their_inputs_outputs_and_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pairs from `options.stdin`, a .tsv output, an output refused for its format or for
    being an input, events to `on_event`; the matrix prints nothing itself, reads stdin in
    chunks of its limit (one read ahead), and on a torchrun rank that got no rows is empty."""
    from sentcli.errors import ConfigError
    from sentcli.events import InferStart
    from sentcli.inference import similarity as sim
    from sentcli.inference.similarity import MATRIX_MAX, cosine_matrix, pair_cosines

    opts = InferenceOptions(device="cpu", precision="fp32")
    events: list[object] = []
    piped = replace_stdin(opts, "a dog runs\ta dog runs\nstocks fell\ta cat sleeps\n")
    out = tmp_path / "c.tsv"
    pair_cosines("-", None, out, None, None, piped, events.append)
    cos = [float(x) for x in out.read_text().split()]
    assert cos[0] == pytest.approx(1.0, abs=1e-5) and cos[1] < 0.99
    assert any(isinstance(e, InferStart) for e in events)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x\n")
    b.write_text("y\n")
    for output, message in ((tmp_path / "c.npy", ".npy"), (b, "b.txt")):
        with pytest.raises(ConfigError, match=message):
            pair_cosines(str(a), str(b), output, None, None, opts, None)

    class Endless:  # stdin that fails once read past what the limit needs
        def __init__(self) -> None:
            self.n = 0

        def readline(self) -> bytes:
            self.n += 1
            if self.n > 2 * (MATRIX_MAX + 1) + 5:  # a chunk past the limit, read ahead
                raise AssertionError("read past the 100-sentence limit")
            return f"sentence {self.n}\n".encode()

        def __iter__(self) -> object:
            return iter(self.readline, b"")

        def read(self, size: int = -1) -> bytes:
            return self.readline()

    from dataclasses import replace

    with pytest.raises(ConfigError, match="at most 100"):
        cosine_matrix("-", None, replace(opts, stdin=Endless()), None)  # type: ignore[arg-type]
    events.clear()
    capsys.readouterr()
    texts, matrix, _ = cosine_matrix(str(a), None, opts, events.append)
    assert texts == ["x"] and capsys.readouterr().out == ""
    assert any(isinstance(e, InferStart) for e in events)
    monkeypatch.setattr(sim, "_Collect", lambda: type("Sink", (), {
        "texts": [], "vectors": [], "write": lambda self, c, v: None, "close": lambda self: None,
    })())  # fmt: skip
    texts, matrix, _ = cosine_matrix(str(a), None, opts, None)
    assert texts == [] and matrix.shape == (0, 0) and matrix.dtype == np.float32
