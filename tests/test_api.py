"""The library end to end on tiny configs: pretrain, resume, --init transfer, checkpoints."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from sentcli import api
from sentcli import checkpoint as ckpt
from sentcli.config import ModelConfig, RunConfig, RunKind, TaskConfig, TrainConfig
from sentcli.data.batching import collate
from sentcli.errors import CheckpointError, ConfigError
from sentcli.events import EvalLog, StepLog, TrainWarning
from sentcli.model import LanguageModel, MultiTaskModel

from helpers import FAST

PRE = {**FAST, "max_steps": 8, "eval_every": 4, "max_eval_batches": 2}


@pytest.fixture(scope="module")
def lm_run(
    tmp_path_factory: pytest.TempPathFactory, corpus_file: Path, tokenizer_path: Path
) -> Path:
    run = tmp_path_factory.mktemp("runs") / "lm"
    result = api.pretrain([str(corpus_file)], run, tokenizer_path, PRE)
    assert result.steps == 8 and not result.interrupted
    return run


def test_pretrain_writes_the_run_folder_contract(lm_run: Path) -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.jsonl",
        "train_state.pt",
    ):
        assert (lm_run / name).is_file(), name
    assert (lm_run / "report" / "losses.png").stat().st_size > 0
    config = json.loads((lm_run / "config.json").read_text())
    assert config["kind"] == "lm" and config["format_version"] == 1 and config["model"]["causal"]
    records = [json.loads(line) for line in (lm_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [4, 8]
    assert all(np.isfinite(e["metrics"]["val_ppl"]) for e in evals)
    assert not list(lm_run.glob(".*.tmp"))  # no temporary files left behind


@pytest.mark.parametrize("kind", [RunKind.lm, RunKind.mtl])
def test_a_saved_model_reloads_as_the_model_that_was_saved(
    tmp_path: Path, tokenizer: Tokenizer, tiny_config: ModelConfig, kind: RunKind
) -> None:
    torch.manual_seed(0)
    tasks = [TaskConfig("topic", "x", label_names=list("abcd")), TaskConfig("s", "y")]
    tasks[1].label_names = ["n", "p"]
    if kind == RunKind.lm:
        model: torch.nn.Module = LanguageModel(tiny_config)
        config = RunConfig(kind, tiny_config, TrainConfig())
    else:
        model = MultiTaskModel(tiny_config, {"topic": 4, "s": 2})
        config = RunConfig(kind, tiny_config, TrainConfig(), tasks=tasks)
    run = tmp_path / "run"
    ckpt.create_run_dir(run)
    ckpt.save_run(run, config, model, tokenizer, step=3)
    _, loaded, _, step = ckpt.load_run(run)
    assert step == 3 and type(loaded) is type(model)
    saved = model.state_dict()
    assert list(loaded.state_dict()) == list(saved)
    assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())
    ids, mask = collate([np.array(tokenizer.encode(t).ids) for t in ("Oil prices rise", "a")])
    model.eval(), loaded.eval()
    if isinstance(model, MultiTaskModel):
        for task in ("topic", "s"):
            assert torch.equal(model(ids, mask, task)[0], loaded(ids, mask, task)[0])
    else:
        assert torch.equal(model(ids)[0], loaded(ids)[0])


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed")} for r in records]


def test_interrupt_then_resume_equals_uninterrupted(
    tmp_path: Path, corpus_file: Path, tokenizer_path: Path
) -> None:
    def interrupt_after_step_4(event: object) -> None:
        if isinstance(event, EvalLog) and event.step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, deferred to the step boundary

    # logs every 3 steps, evaluates every 2: the stop at step 4 falls inside a log window
    opts = {**PRE, "log_every": 3, "eval_every": 2}
    full = tmp_path / "full"
    api.pretrain([str(corpus_file)], full, tokenizer_path, opts)
    cut = tmp_path / "cut"
    first = api.pretrain(
        [str(corpus_file)], cut, tokenizer_path, opts, on_event=interrupt_after_step_4
    )
    assert first.interrupted
    assert first.steps == 4
    assert json.loads((cut / "report" / "summary.json").read_text())["steps"] == 4
    events: list[object] = []
    second = api.pretrain(
        [str(corpus_file)], cut, resume=True, options={**opts, "lr": 0.5}, on_event=events.append
    )
    assert second.steps == 8 and not second.interrupted
    warnings = [e.message for e in events if isinstance(e, TrainWarning)]
    # the same flags again are not named; the changed one is (and the run kept its own lr)
    assert warnings[0].endswith("ignored: --lr=0.5")
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on CPU
    metrics = [ckpt.read_metrics(p) for p in (full, cut)]
    resumed = [r for r in metrics[1] if r["kind"] != "interrupted"]
    assert _without_timing(metrics[0]) == _without_timing(resumed)


def test_mlm_objective_trains_bidirectional(
    tmp_path: Path, corpus_file: Path, tokenizer_path: Path
) -> None:
    result = api.pretrain(
        [str(corpus_file)], tmp_path / "mlm", tokenizer_path, {**PRE, "objective": "mlm"}
    )
    assert result.config.model.causal is False
    assert np.isfinite(result.history[-1]["val_loss"])


def test_init_transfers_the_pretrained_trunk(tmp_path: Path, lm_run: Path, topic_dir: Path) -> None:
    result = api.train_encoder(
        f"topic={topic_dir}",
        tmp_path / "enc",
        init=lm_run,
        options={**FAST, "max_steps": 0, "epochs": 1, "lr": 1e-12},
    )
    assert result.config.model.causal is False  # encoders attend both ways, even from a causal LM
    assert result.init is not None
    assert result.init["tensors"] == 28  # 2 blocks × 12 + wte, wpe, ln_f weight and bias
    lm = load_file(str(lm_run / "model.safetensors"))
    enc = load_file(str(tmp_path / "enc" / "model.safetensors"))
    trunk = [k for k in lm if k.startswith("trunk.")]
    assert len(trunk) == result.init["tensors"]
    # with a vanishing learning rate the trunk is still (numerically) the pretrained one
    assert all(torch.allclose(lm[k], enc[k], atol=1e-6) for k in trunk)
    assert result.test_splits == {"topic": "test"}
    assert np.array(result.test["topic"]["confusion"]).shape == (4, 4)


def test_init_refuses_architecture_overrides(tmp_path: Path, lm_run: Path, topic_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--n-layer conflicts with the --init run"):
        api.train_encoder(f"topic={topic_dir}", tmp_path / "e", init=lm_run, options={"n_layer": 5})


def test_encoder_accuracy_matches_recomputation(
    tmp_path: Path, topic_dir: Path, tokenizer_path: Path
) -> None:
    opts = {**FAST, "epochs": 2}
    result = api.train_encoder(
        f"topic={topic_dir}", tmp_path / "e", tokenizer=tokenizer_path, options=opts
    )
    config, model, tok, _ = ckpt.load_run(tmp_path / "e")
    assert config.kind == "encoder" and config.model.causal is False
    rows = read_rows_csv(topic_dir / "test.csv")
    model.eval()
    block = config.model.block_size
    seqs = [np.array(tok.encode(t).ids[: block - 1] + tok.encode(t).ids[-1:]) for t, _ in rows]
    with torch.no_grad():
        preds = [model(*collate([s]), "topic")[0].argmax(-1).item() for s in seqs]
    accuracy = np.mean([p == int(y) for p, (_, y) in zip(preds, rows, strict=True)])
    assert result.test["topic"]["accuracy"] == pytest.approx(accuracy)


def read_rows_csv(path: Path) -> list[tuple[str, str]]:
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def test_checkpoint_problems_are_refused(tmp_path: Path, lm_run: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lm_run, run)
    (run / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or not safetensors"):
        ckpt.load_run(run)
    (run / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        ckpt.load_run(run)
    with pytest.raises(CheckpointError, match="no such folder"):
        ckpt.load_run(tmp_path / "nowhere")


# the crafted pickle uses protocol 4, which torch.load warns about before refusing it
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickled_code_in_train_state_never_runs(tmp_path: Path, lm_run: Path) -> None:
    import pickle
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lm_run, run)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    with open(run / "train_state.pt", "wb") as f:
        pickle.dump({"step": 8, "x": Payload()}, f)
    with pytest.raises(CheckpointError, match="unsafe to load"):
        ckpt.load_train_state(run, 8)
    assert not marker.exists()


def test_save_every_checkpoints_between_evaluations(
    tmp_path: Path, corpus_file: Path, tokenizer_path: Path
) -> None:
    saved_steps = []

    def watch(event: object) -> None:
        if isinstance(event, StepLog):  # logged before that step's save
            weights = tmp_path / "lm" / "model.safetensors"
            saved_steps.append(ckpt.load_weights(tmp_path / "lm")[1] if weights.exists() else 0)

    opts = {**PRE, "eval_every": 0, "save_every": 3, "log_every": 1, "max_steps": 7}
    api.pretrain([str(corpus_file)], tmp_path / "lm", tokenizer_path, opts, on_event=watch)
    assert saved_steps == [0, 0, 0, 3, 3, 3, 6]
