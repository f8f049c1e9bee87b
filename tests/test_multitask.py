"""Multi-task training: schedules, weighted losses, freeze modes end to end, the CLI."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sentcli import api
from sentcli import checkpoint as ckpt
from sentcli.cli import app
from sentcli.data.batching import collate
from sentcli.events import StepLog

from helpers import FAST

MTL = {**FAST, "epochs": 2, "batch_size": 16}


def batches(n: int, tag: int) -> list[np.ndarray]:
    return [np.array([tag, i]) for i in range(n)]


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path, tokenizer_path: Path) -> Path:
    run = tmp_path_factory.mktemp("mtl") / "lm"
    api.pretrain(
        [str(corpus_file)], run, tokenizer_path, {**FAST, "max_steps": 4, "max_eval_batches": 1}
    )
    return run


def read_rows_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return [(t, y) for t, y in list(csv.reader(f))[1:]]


def specs(topic_dir: Path, sentiment_dir: Path) -> list[api.TaskConfig]:
    return [
        api.TaskConfig("topic", str(topic_dir)),
        api.TaskConfig("sentiment", str(sentiment_dir)),
    ]


def test_backbone_freeze_trains_only_heads(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    result = api.train_mtl(
        specs(topic_dir, sentiment_dir),
        tmp_path / "m",
        init=lm,
        options={**MTL, "freeze": "backbone"},
    )
    before, after = (
        load_file(str(lm / "model.safetensors")),
        load_file(str(tmp_path / "m" / "model.safetensors")),
    )
    trunk = [k for k in before if k.startswith("trunk.")]
    assert all(torch.equal(before[k], after[k]) for k in trunk)  # bit-identical backbone
    assert result.init is not None and result.init["heads_new"] == ["topic", "sentiment"]
    # epoch-0 row, then one row per epoch, with every task's metrics
    assert [h["epoch"] for h in result.history] == [-1, 0, 1]
    assert result.history[0]["topic/train_loss"] is None
    assert all(h["sentiment/accuracy"] is not None for h in result.history)
    # round-robin: every training example once per epoch
    n_topic = 240 - round(240 * 0.1)
    assert [h["topic/examples"] for h in result.history[1:]] == [n_topic, n_topic]
    records = ckpt.read_metrics(tmp_path / "m")
    groups = {g for r in records if r["kind"] == "train" for g in r["group_norms"]}
    assert groups == {"head.topic", "head.sentiment"}
    assert set(result.test) == {"topic", "sentiment"}
    for name in (
        "losses.png",
        "confusion_topic.png",
        "confusion_sentiment.png",
        "grad_norms.png",
        "summary.json",
    ):
        assert (tmp_path / "m" / "report" / name).is_file(), name


def logged_tasks(run: Path) -> list[list[str]]:
    """The tasks of each logged window of a run's metrics.jsonl, in the order given."""
    return [list(r["task_losses"]) for r in ckpt.read_metrics(run) if r["kind"] == "train"]


def test_each_schedule_runs_its_own_step_order_end_to_end(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    """With a log per step, metrics.jsonl names the tasks of every step of an epoch (topic
    has 14 batches of 16 train rows, sentiment 7): round-robin takes turns until sentiment
    runs out, joint takes every task left each step, proportional draws one task per step
    in another order, and every schedule uses each batch once."""
    order = {}
    for schedule in ("round-robin", "joint", "proportional"):
        run = tmp_path / schedule
        opts = {**MTL, "epochs": 1, "log_every": 1, "schedule": schedule}
        api.train_mtl(specs(topic_dir, sentiment_dir), run, init=lm, options=opts)
        order[schedule] = logged_tasks(run)
    assert order["round-robin"] == [["topic"], ["sentiment"]] * 7 + [["topic"]] * 7
    assert order["joint"] == [["topic", "sentiment"]] * 7 + [["topic"]] * 7
    drawn = [tasks[0] for tasks in order["proportional"]]
    assert all(len(tasks) == 1 for tasks in order["proportional"])
    assert (drawn.count("topic"), drawn.count("sentiment")) == (14, 7)
    assert order["proportional"] != order["round-robin"]


def test_gradual_unfreezing_adds_a_block_per_epoch(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    opts = {**MTL, "epochs": 3, "freeze": "backbone", "unfreeze_every": 1, "log_every": 1}
    api.train_mtl(specs(topic_dir, sentiment_dir), tmp_path / "m", init=lm, options=opts)
    by_epoch: dict[int, set[str]] = {}
    for r in ckpt.read_metrics(tmp_path / "m"):
        if r["kind"] == "train":
            by_epoch.setdefault(r["epoch"], set()).update(r["group_norms"])
    heads = {"head.topic", "head.sentiment"}
    assert by_epoch[0] == heads
    assert by_epoch[1] == heads | {"final_norm", "block.1"}
    assert by_epoch[2] == heads | {"final_norm", "block.1", "block.0"}


def test_freeze_all_evaluates_only(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    result = api.train_mtl(
        specs(topic_dir, sentiment_dir), tmp_path / "m", init=lm, options={**MTL, "freeze": "all"}
    )
    assert result.steps == 0 and len(result.history) == 1
    saved, trained = load_file(lm / "model.safetensors"), load_file(tmp_path / "m" / ckpt.WEIGHTS)
    assert all(torch.equal(saved[k], trained[k]) for k in saved if k.startswith("trunk."))
    # the reported accuracy is the saved model's on the test rows, text by text (no batching)
    _, model, tok, _ = ckpt.load_run(tmp_path / "m")
    block = model.config.block_size
    rows = read_rows_csv(topic_dir / "test.csv")
    right = 0
    with torch.no_grad():
        for text, label in rows:
            ids = tok.encode(text).ids
            ids = ids if len(ids) <= block else ids[: block - 1] + ids[-1:]
            x = torch.tensor([ids])
            logits = model(x, torch.ones_like(x, dtype=torch.bool), "topic")[0]
            right += int(logits.argmax()) == int(label)
    assert result.test["topic"]["accuracy"] == pytest.approx(right / len(rows), abs=1e-12)


def test_init_from_a_multitask_run_keeps_matching_heads(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    first = tmp_path / "first"
    api.train_mtl(
        [api.TaskConfig("topic", str(topic_dir))], first, init=lm, options={**MTL, "epochs": 1}
    )
    result = api.train_mtl(
        specs(topic_dir, sentiment_dir),
        tmp_path / "second",
        init=first,
        options={**MTL, "freeze": "all"},
    )
    assert result.init is not None
    assert result.init["heads_kept"] == ["topic"] and result.init["heads_new"] == ["sentiment"]
    a, b = (
        load_file(str(first / "model.safetensors")),
        load_file(str(tmp_path / "second" / "model.safetensors")),
    )
    assert torch.equal(a["heads.topic.weight"], b["heads.topic.weight"])


runner = CliRunner()


def mtl_args(lm: Path, topic_dir: Path, sentiment_dir: Path) -> list[str]:
    """train-mtl on the two small task folders, starting from the tiny LM."""
    return [
        "train-mtl",
        "--task",
        f"topic={topic_dir}",
        "--task",
        f"sentiment={sentiment_dir}",
        "--init",
        str(lm),
    ]


def test_cli_train_mtl_prints_tables(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    args = [
        *mtl_args(lm, topic_dir, sentiment_dir),
    ]
    args += [
        "--freeze",
        "layers:1",
        "--schedule",
        "joint",
        "--task-weight",
        "sentiment=2",
        "--epochs",
        "1",
    ]
    args += [
        "--device",
        "cpu",
        "--explode-threshold",
        "1e-12",
        "--keep-best",
        "--best-by",
        "metric",
        "--quiet",
        "-o",
        str(tmp_path / "m"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "best.safetensors").is_file()
    for text in (
        "kept the weights of step",
        "--best-by metric) in best.safetensors",
        "parameter groups (--freeze layers:1)",
        "frozen",
        "per-task losses",
        "topic test: accuracy",
        "sentiment test: accuracy",
        "gradient norms per group",
        "exploding",
    ):
        assert text in result.output, text
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["kind"] == "mtl" and config["train"]["task_weights"] == {"sentiment": 2.0}


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--freeze", "backbone,head:topic"], "nothing to train"),
        (["--freeze", "head:nope"], "valid: none, backbone"),
        (["--task-weight", "nope=2"], "unknown task"),
        (["--text-column", "nope=text"], "no task 'nope'"),
    ],
)
def test_cli_train_mtl_refuses_bad_options(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path, extra: list[str], message: str
) -> None:
    args = [
        *mtl_args(lm, topic_dir, sentiment_dir),
        "-o",
        str(tmp_path / "m"),
        *extra,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def mtl_run(
    tmp_path_factory: pytest.TempPathFactory, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("mtlrun") / "m"
    args = [
        *mtl_args(lm, topic_dir, sentiment_dir),
    ]
    result = runner.invoke(
        app,
        [
            *args,
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--quiet",
            "-o",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    return run, result.output


def table_lines(output: str, title: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("└"))
    return lines[start : end + 1]


def test_evaluate_json_matches_the_printed_table_and_the_run(mtl_run: tuple[Path, str]) -> None:
    run, train_output = mtl_run
    printed = runner.invoke(app, ["evaluate", "--model", str(run), "--device", "cpu"])
    as_json = runner.invoke(app, ["evaluate", "--model", str(run), "--device", "cpu", "--json"])
    assert printed.exit_code == 0 and as_json.exit_code == 0, printed.output + as_json.output
    result = json.loads(as_json.output)
    summary = json.loads((run / "report" / "summary.json").read_text())
    for task in ("topic", "sentiment"):
        m = result["tasks"][task]
        assert m["split"] == "test"
        assert f"{task} (" in printed.output and f"accuracy {m['accuracy']:.4f}" in printed.output
        assert m["accuracy"] == pytest.approx(summary["test"][task]["accuracy"])
        assert m["confusion"] == summary["test"][task]["confusion"]
    # the same confusion table as train-mtl printed
    assert (
        table_lines(printed.output, "topic confusion")[1:]
        == table_lines(train_output, "topic confusion")[1:]
    )


def test_report_reproduces_the_tables(mtl_run: tuple[Path, str]) -> None:
    run, train_output = mtl_run
    (run / "report" / "losses.png").unlink()
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    for title in (
        "per-task losses",
        "topic confusion",
        "sentiment confusion",
        "gradient norms per group",
    ):
        assert table_lines(result.output, title) == table_lines(train_output, title), title
    assert (run / "report" / "losses.png").is_file()
    as_json = json.loads(runner.invoke(app, ["report", str(run), "--json"]).output)
    assert as_json["kind"] == "mtl" and [h["epoch"] for h in as_json["history"]] == [-1, 0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["evaluate", "--model", "{lm}"], "has no task heads"),
        (["evaluate", "--model", "{run}", "--task", "nope={topic}"], "has no task nope"),
        (["evaluate", "--model", "{topic}"], "not a complete run folder"),
        (
            ["evaluate", "--model", "{run}", "--task", "sentiment={topic}"],
            "differs from the model's labels",
        ),
        (["report", "{topic}"], "not a complete run folder"),
    ],
)
def test_evaluate_and_report_refuse_bad_input(
    args: list[str], message: str, mtl_run: tuple[Path, str], lm: Path, topic_dir: Path
) -> None:
    values = {"lm": lm, "run": mtl_run[0], "topic": topic_dir}
    result = runner.invoke(app, [a.format(**values) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_report_of_a_language_model_run(lm: Path) -> None:
    result = runner.invoke(app, ["report", str(lm)])
    assert result.exit_code == 0, result.output
    assert "evaluations" in result.output and "val ppl" in result.output


def test_balance_and_max_samples_cut_the_train_splits(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    def examples(name: str, **extra: object) -> dict[str, int]:
        opts = {**MTL, "epochs": 1, "freeze": "backbone", **extra}
        run = api.train_mtl(specs(topic_dir, sentiment_dir), tmp_path / name, lm, options=opts)
        last = run.history[1]
        return {k: last[k] for k in last if k.endswith(("/examples", "/batches"))}

    n_topic, n_sentiment = 240 - round(240 * 0.1), 120 - round(120 * 0.1)
    balanced = examples("b", balance="downsample")
    assert balanced["topic/examples"] == balanced["sentiment/examples"] == n_sentiment
    capped = examples("c", max_samples_per_task=50)
    assert capped["topic/examples"] == capped["sentiment/examples"] == 50
    # upsample: sentiment (108 rows, 7 batches of 16) goes round until it has topic's count
    up = examples("u", balance="upsample")
    assert up["topic/examples"] == n_topic
    assert up["topic/batches"] == up["sentiment/batches"] == 14
    assert up["sentiment/examples"] > 2 * n_sentiment - 16


def test_zero_head_weights_trigger_vanishing_gradient_warnings(
    tmp_path: Path, lm: Path, topic_dir: Path
) -> None:
    from safetensors.torch import save_file

    from sentcli import checkpoint as ckpt

    first = tmp_path / "first"
    api.train_mtl(
        [api.TaskConfig("topic", str(topic_dir))],
        first,
        init=lm,
        options={**MTL, "epochs": 1, "freeze": "all"},
    )
    weights = load_file(str(first / "model.safetensors"))
    weights["heads.topic.weight"].zero_()  # no gradient can reach the trunk through a zero head
    save_file(weights, str(first / "model.safetensors"), metadata={"step": "0"})
    api.train_mtl(
        [api.TaskConfig("topic", str(topic_dir))],
        tmp_path / "m",
        init=first,
        options={**MTL, "max_steps": 1, "log_every": 1},
    )
    warnings = [r["message"] for r in ckpt.read_metrics(tmp_path / "m") if r["kind"] == "warning"]
    assert any("embeddings" in w and "vanishing" in w for w in warnings)
    assert any("block.0" in w and "vanishing" in w for w in warnings)
    assert not any("head.topic" in w for w in warnings)


def test_loss_table_accuracy_equals_a_recomputation(
    mtl_run: tuple[Path, str], topic_dir: Path
) -> None:
    from sentcli import checkpoint as ckpt
    from sentcli.data.tasks import load_task
    from sentcli.tokenizer import encode

    run, _ = mtl_run
    config, model, tok, _ = ckpt.load_run(run)
    last = api.report(run)["history"][-1]
    td = load_task(
        "topic", str(topic_dir), val_fraction=config.train.val_fraction, seed=config.train.seed
    )
    model.eval()
    seqs = encode(tok, list(td.validation["text"]), config.model.block_size)
    with torch.no_grad():
        preds = [model(*collate([s]), "topic")[0].argmax(-1).item() for s in seqs]
    accuracy = np.mean(np.array(preds) == np.array(list(td.validation["label"])))
    assert last["topic/accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_cli_freeze_all_says_so_and_exits_0(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    args = [
        *mtl_args(lm, topic_dir, sentiment_dir),
    ]
    result = runner.invoke(
        app, [*args, "--freeze", "all", "--device", "cpu", "--quiet", "-o", str(tmp_path / "m")]
    )
    assert result.exit_code == 0, result.output
    assert "nothing trains" in result.output and "topic test: accuracy" in result.output


def test_interrupted_multitask_run_resumes_to_the_same_weights(
    tmp_path: Path, lm: Path, topic_dir: Path, sentiment_dir: Path
) -> None:
    import os
    import signal

    def interrupt_after_first_step(event: object) -> None:
        if isinstance(event, StepLog) and event.step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    opts = {**MTL, "log_every": 1, "schedule": "joint", "freeze": "layers:1"}
    api.train_mtl(specs(topic_dir, sentiment_dir), tmp_path / "full", init=lm, options=opts)
    first = api.train_mtl(
        specs(topic_dir, sentiment_dir),
        tmp_path / "cut",
        init=lm,
        options=opts,
        on_event=interrupt_after_first_step,
    )
    assert first.interrupted and first.steps == 1 and first.test == {}
    second = api.train_mtl([], tmp_path / "cut", resume=True)
    assert not second.interrupted and second.steps > 1
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The per-task train losses of the resumed epoch count the steps before the stop too.
    full = api.report(tmp_path / "full")["history"]
    cut = api.report(tmp_path / "cut")["history"]
    assert [h["topic/train_loss"] for h in full] == [h["topic/train_loss"] for h in cut]
    assert [h["sentiment/batches"] for h in full] == [h["sentiment/batches"] for h in cut]
