"""Hard kills: whenever a training process dies, the run on disk loads and resumes."""

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sentcli import checkpoint as ckpt

from helpers import FAST_FLAGS


def saved_at(run_dir: Path) -> float:
    path = run_dir / ckpt.WEIGHTS
    return path.stat().st_mtime if path.is_file() else 0.0


def test_a_kill_between_weights_and_state_rename_keeps_the_matching_state(
    tmp_path: Path, tokenizer_path: Path, monkeypatch: object
) -> None:
    import os

    import pytest

    from sentcli.config import ModelConfig, RunConfig, TrainConfig
    from sentcli.model import LanguageModel
    from sentcli.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    config = RunConfig("lm", ModelConfig(vocab_size=tok.get_vocab_size(), n_embd=16), TrainConfig())
    model = LanguageModel(config.model)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ckpt.save_run(run_dir, config, model, tok, 1, {"step": 1})
    real_replace = os.replace

    def killed_before_the_state_rename(src: object, dst: object) -> None:
        if Path(str(dst)).name == ckpt.STATE:
            raise KeyboardInterrupt  # stands in for the kill
        real_replace(src, dst)  # type: ignore[arg-type]

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    mp.setattr(ckpt.os, "replace", killed_before_the_state_rename)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_run(run_dir, config, model, tok, 2, {"step": 2})
    mp.undo()
    assert ckpt.load_weights(run_dir)[1] == 2  # the new weights landed, the old state stayed
    assert ckpt.load_train_state(run_dir, 2)["step"] == 2  # found in train_state.next.pt


@pytest.mark.slow
def test_resume_auto_relaunched_after_kill_9_ends_as_one_uninterrupted_run(
    tmp_path: Path, corpus_file: Path, tokenizer_path: Path
) -> None:
    """The same command line, `--resume auto`, killed (SIGKILL) at random moments and
    relaunched, as a scheduler or torchrun --max-restarts would: the first tries start the
    run (also over what a try killed before its first checkpoint left), later ones continue
    it, every kill leaves a run that loads and resumes, and the end equals one uninterrupted
    run."""
    from safetensors.torch import load_file

    def command(run_dir: Path) -> list[str]:
        cmd = [sys.executable, "-m", "sentcli", "pretrain", str(corpus_file)]
        cmd += ["--tokenizer", str(tokenizer_path), *FAST_FLAGS, "--max-steps", "200"]
        return cmd + ["--save-every", "1", "--log-every", "1", "--resume", "auto"]

    run_dir = tmp_path / "run"
    rng = random.Random(1)
    steps: list[int] = []
    for i in range(6):
        proc = subprocess.Popen(
            [*command(run_dir), "-o", str(run_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if i == 0:
            time.sleep(0.3)  # the first kill lands before any checkpoint (while Python starts)
        else:
            # the others once this try has saved a step (start-up time varies from machine to
            # machine; a fixed sleep killed every try of a slow one before its first save)
            before, deadline = saved_at(run_dir), time.time() + 120
            while saved_at(run_dir) == before and time.time() < deadline and proc.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.25))  # a few steps: a step takes about 20 ms
        proc.kill()  # SIGKILL: no handler runs, no finally block
        assert proc.wait() == -9, "the run ended before its kill; give it more steps"
        if not (run_dir / ckpt.WEIGHTS).is_file():
            steps.append(0)
            continue
        # every step saves (config, tokenizer, state, weights, rename): wherever in it the
        # kill landed, the run loads strictly, with the state and metrics of its step
        config, model, tok, step = ckpt.load_run(run_dir)
        assert ckpt.load_train_state(run_dir, step)["step"] == step
        assert ckpt.read_metrics(run_dir)
        steps.append(step)
    assert steps[0] == 0 and steps == sorted(steps) and steps[-1] > 0, steps
    done = subprocess.run([*command(run_dir), "-o", str(run_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not list(run_dir.glob(".*.tmp"))  # the resumed run swept the killed runs' temp files
    again = subprocess.run([*command(run_dir), "-o", str(run_dir)], capture_output=True, text=True)
    assert again.returncode == 0 and "resuming at step 200" in again.stderr  # finished: no-op
    one = subprocess.run(
        [*command(tmp_path / "one"), "-o", str(tmp_path / "one")], capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr
    assert ckpt.load_weights(run_dir)[1] == ckpt.load_weights(tmp_path / "one")[1] == 200
    ours, theirs = load_file(run_dir / ckpt.WEIGHTS), load_file(tmp_path / "one" / ckpt.WEIGHTS)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_resume_auto_starts_then_continues_to_the_uninterrupted_result(
    tmp_path: Path, tokenizer_path: Path, topic_dir: Path
) -> None:
    """The fast tier's `--resume auto`: the first try starts the run (an empty folder, none
    at all), a SIGINT stops it after step 2, the same call continues it, and the end is
    bit-identical to one uninterrupted run; the CLI starts train-encoder the same way."""
    import os
    import signal

    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from sentcli import api
    from sentcli.cli import app
    from sentcli.events import StepLog

    from helpers import FAST

    def stop_after_step_2(event: object) -> None:
        if isinstance(event, StepLog) and event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    opts = {**FAST, "max_steps": 6, "log_every": 1}
    task = f"topic={topic_dir}"
    one = api.train_encoder(task, tmp_path / "one", tokenizer=tokenizer_path, options=opts)
    run = tmp_path / "run"
    first = api.train_encoder(
        task, run, tokenizer=tokenizer_path, options=opts, resume="auto",
        on_event=stop_after_step_2,
    )  # fmt: skip
    assert first.interrupted == signal.SIGINT and first.steps == 2
    second = api.train_encoder(task, run, tokenizer=tokenizer_path, options=opts, resume="auto")
    assert not second.interrupted and second.steps == one.steps == 6
    ours, theirs = load_file(run / ckpt.WEIGHTS), load_file(tmp_path / "one" / ckpt.WEIGHTS)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    cli = tmp_path / "cli"
    cli.mkdir()  # an empty folder: started, not refused
    args = ["train-encoder", "--task", task, "--tokenizer", str(tokenizer_path), *FAST_FLAGS]
    done = CliRunner().invoke(app, [*args, "--max-steps", "2", "--resume", "auto", "-o", str(cli)])
    assert done.exit_code == 0, done.output
    assert ckpt.load_weights(cli)[1] == 2


@pytest.mark.slow
def test_a_killed_index_build_leaves_no_index_that_loads_as_complete(tmp_path: Path) -> None:
    """kill -9 at random moments of `index build`: the index's name holds nothing or a
    whole index (never a partial one), and the next build removes what the killed one left."""
    import numpy as np

    from sentcli.inference import ann

    rng = np.random.default_rng(0)
    v = rng.standard_normal((100_000, 64)).astype(np.float32)
    np.save(tmp_path / "v.npy", v / np.linalg.norm(v, axis=1, keepdims=True))
    out = tmp_path / "x.index"
    cmd = [sys.executable, "-m", "sentcli", "index", "build", str(tmp_path / "v.npy")]
    cmd += ["-o", str(out), "--dtype", "f16", "--quiet", "--overwrite"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    random.seed(3)
    outcomes = []
    for _ in range(4):  # each kill lands in a build that replaces the whole index
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(random.uniform(0.3, 3.0))
        proc.kill()
        proc.wait()
        if out.exists():  # the old index or the new one, whole
            index = ann.open_index(out)
            assert len(index) == 100_000 and index.meta["indexed"] == 100_000
            outcomes.append("whole")
        else:
            outcomes.append("none")  # killed between moving the old one aside and renaming
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(ann.open_index(out)) == 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy", "x.index"], outcomes
