"""The run folder contract (docs/run-folder.md): writing it whole, loading it, and refusing
what does not fit."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from sentcli.config import Resume, RunConfig
from sentcli.errors import CheckpointError, ConfigError, DataError, TokenizerError
from sentcli.files import atomic_write, check_writable, existing_folder, write_text
from sentcli.model import LanguageModel, MultiTaskModel
from sentcli.objectives import heads
from sentcli.tokenizer import check_specials

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"
SUMMARY = "report/summary.json"
STATE = "train_state.pt"
NEXT_STATE = "train_state.next.pt"
REQUIRED = (CONFIG, WEIGHTS, TOKENIZER)


def resume_or_start(
    run_dir: Path, resume: Resume, overwrite: bool, inputs: Sequence[str | Path] = ()
) -> tuple[bool, bool]:
    """(resume, overwrite) for `--resume auto`: continue the run in `run_dir` when it has a
    checkpoint, else start it, replacing what a try killed before its first checkpoint left
    (a run folder without weights). Other values pass through."""
    if resume != "auto":
        return bool(resume), overwrite
    has_state = (run_dir / STATE).is_file() or (run_dir / NEXT_STATE).is_file()
    if all((run_dir / n).is_file() for n in REQUIRED) and has_state:
        return True, overwrite
    if overwrite or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return False, overwrite
    if (run_dir / WEIGHTS).exists():
        raise CheckpointError(
            f"--resume auto: {run_dir} holds weights but no {STATE} to continue from; pass "
            "--overwrite to start again, or give -o another folder"
        )
    check_replaceable(run_dir, inputs)
    return False, True


def check_run_dir(
    run_dir: Path, overwrite: bool, resume: bool, inputs: Sequence[str | Path] = ()
) -> None:
    """Check, before any heavy work, that `run_dir` may be written (or resumed); `inputs`:
    the paths the command reads, which --overwrite must not delete."""
    if not run_dir.parent.is_dir():
        raise ConfigError(
            f"output folder's parent {run_dir.parent} does not exist; create it first"
        )
    check_writable(run_dir, existing_folder(run_dir))
    if resume:
        if int(os.environ.get("RANK", "0")) == 0:  # the rank that holds the run's lock
            for stale in run_dir.glob(".*.tmp"):  # left by a hard kill in a write
                stale.unlink(missing_ok=True)
        missing = [n for n in REQUIRED if not (run_dir / n).is_file()]
        if not (run_dir / STATE).is_file() and not (run_dir / NEXT_STATE).is_file():
            missing.append(STATE)
        if missing:
            raise CheckpointError(
                f"cannot resume {run_dir}: missing {', '.join(missing)}; start a new run "
                "without --resume"
            )
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output {run_dir} is a file; give a folder path")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"output folder {run_dir} exists and is not empty; pass --overwrite to replace "
                "it or --resume to continue it"
            )
        check_replaceable(run_dir, inputs)


BEST = "best.safetensors"
"""--keep-best: the weights of the best evaluation so far (its step and score in the
metadata); a run trained with it is loaded from them."""
RUN_NAMES = {CONFIG, WEIGHTS, TOKENIZER, METRICS, STATE, NEXT_STATE, BEST, "report", "tensorboard"}
"""What sentcli writes into a run folder (and .NAME.tmp files while it writes)."""


def precious(folder: Path) -> bool:
    """`/`, the home folder and the current folder: never an output to replace."""
    return folder.resolve() in (Path("/"), Path.home().resolve(), Path.cwd().resolve())


def check_not_precious(folder: Path) -> None:
    """--overwrite never deletes a `precious` folder."""
    target = folder.resolve()
    if precious(folder):
        raise ConfigError(
            f"--overwrite would delete {folder} ({target}); give -o a new folder for the output"
        )


def check_replaceable(
    run_dir: Path,
    inputs: Sequence[str | Path],
    owned: set[str] = RUN_NAMES,
    what: str = "a sentcli run folder",
) -> None:
    """--overwrite deletes `run_dir`: only `what` (its entries all in `owned`; or an empty
    folder) that holds none of the command's inputs, and never `/`, the home folder or the
    current folder."""
    check_not_precious(run_dir)
    target = run_dir.resolve()
    for given in inputs:
        if not str(given) or str(given).startswith("hf:"):
            continue
        path = Path(given).resolve()
        if path == target or target in path.parents:
            raise ConfigError(
                f"--overwrite would delete {run_dir}, which holds this command's input "
                f"{given}; give -o another folder"
            )
    foreign = sorted(
        e.name
        for e in run_dir.iterdir()
        if e.name not in owned and not (e.name.startswith(".") and e.name.endswith(".tmp"))
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise ConfigError(
            f"--overwrite only replaces {what}, and {run_dir} also holds {shown}; "
            "give -o another folder, or empty that one yourself"
        )


EXPORT_META = "sentcli_export.json"
"""What an export folder holds and how to feed it (inputs, outputs, max length, pooling,
normalisation, label names)."""
EXPORT_NAMES = {
    EXPORT_META, "model.onnx", "model_int8.onnx", "tokenizer.json",  # onnx
    "model.safetensors", "config.json", "tokenizer_config.json", "modules.json",
    "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling",
    "2_Normalize",  # sentence-transformers
}  # fmt: skip
"""What an export writes: --overwrite replaces a folder holding nothing else."""


def check_export_dir(out_dir: Path, overwrite: bool, run_dir: Path) -> None:
    """An export goes to a new or empty folder, or replaces an earlier export (with
    --overwrite: under the run folders' rules, never `/`, home, the current folder, a
    folder holding the run or files the export did not write); never into the run itself,
    never through a symbolic link."""
    if out_dir.is_symlink():
        raise ConfigError(
            f"-o {out_dir} is a symbolic link (to {os.readlink(out_dir)}); give the folder "
            "itself or a new one"
        )
    if not out_dir.parent.is_dir():
        raise ConfigError(f"-o {out_dir}: folder {out_dir.parent} does not exist; create it first")
    if out_dir.resolve() == run_dir.resolve() or run_dir.resolve() in out_dir.resolve().parents:
        raise ConfigError(f"-o {out_dir} is inside the run {run_dir}; export to another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"-o {out_dir} is a file; give a folder")
    if precious(out_dir):
        raise ConfigError(
            f"-o {out_dir} ({out_dir.resolve()}) is a folder an export would replace whole; "
            "give -o a new folder"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / EXPORT_META).is_file():
            raise ConfigError(
                f"-o {out_dir} holds files that are not a sentcli export; give a new folder"
            )
        if not overwrite:
            raise ConfigError(f"-o {out_dir} holds an export; pass --overwrite to replace it")
        check_replaceable(out_dir, [run_dir], EXPORT_NAMES, "a sentcli export")
    check_writable(out_dir, existing_folder(out_dir))


def make_parent(run_dir: Path) -> None:
    """Make the folders above a new run (`-o runs/lm` with no runs/ yet), so that its lock
    has a place; a file in the way or a folder that cannot be written is refused."""
    if run_dir.parent.is_dir():
        return
    blocking = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"-o {run_dir}: {blocking} is a file, not a folder; give another path")
    check_writable(run_dir, existing_folder(run_dir))
    run_dir.parent.mkdir(parents=True, exist_ok=True)


def lock_path(run_dir: Path) -> Path:
    """The lock of a run folder lives beside it (a new run's folder does not exist yet, and
    --overwrite deletes the old one)."""
    return run_dir.parent / f".{run_dir.name}.lock"


def _holder(lock: Path) -> str:
    """Who holds `lock`, as its file says (pid, host, start), for the message."""
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        since = time.strftime("%H:%M:%S", time.localtime(float(info["started"])))
        return f"process {int(info['pid'])} on {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for one writer: an exclusive flock on `lock_path(run_dir)` for the
    whole command. The kernel drops it when its process dies (kill -9, OOM, a reboot), so a
    stale lock never blocks a rerun, and a reused pid cannot fake a holder. A second writer
    gets a one-line error naming the holder. Under torchrun rank 0 holds it; where flock is
    missing (Windows) or the lock cannot be created (a read-only parent), nothing is held."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield  # other ranks write nothing
        return
    make_parent(run_dir)
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock = lock_path(run_dir)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{run_dir} is being written by {_holder(lock)}; wait for it to finish or "
                f"stop it, then rerun (lock: {lock})"
            ) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder unlinked after we opened it
            break
        os.close(fd)
    else:
        raise ConfigError(f"{run_dir}: its lock {lock} keeps changing hands; rerun")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: the next writer makes a new file
        os.close(fd)


def create_run_dir(run_dir: Path) -> None:
    """An empty `run_dir` (an old one is removed: `check_run_dir` allowed it)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir()


def build_model(config: RunConfig) -> nn.Module:
    if config.kind == "lm":
        return LanguageModel(config.model)
    return MultiTaskModel(config.model, heads(config.tasks, config.model.n_embd))


def save_run(
    run_dir: Path,
    config: RunConfig,
    model: nn.Module,
    tokenizer: Tokenizer,
    step: int,
    train_state: dict[str, Any] | None = None,
) -> None:
    """Write config, weights, tokenizer (and the train state), each atomically. The weights
    and the train state both carry `step`. The new state goes to `train_state.next.pt`
    first and replaces `train_state.pt` only after the weights: a kill at any moment leaves
    a state that matches the weights on disk (see `load_train_state`)."""
    write_text(run_dir / CONFIG, json.dumps(config.to_dict(), indent=2) + "\n")
    write_text(run_dir / TOKENIZER, tokenizer.to_str())
    if train_state is not None:
        atomic_write(run_dir / NEXT_STATE, lambda tmp: torch.save(train_state, tmp))
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "kind": config.kind, "step": str(step)}
    atomic_write(run_dir / WEIGHTS, lambda tmp: save_file(weights, str(tmp), metadata=metadata))
    if train_state is not None:
        os.replace(run_dir / NEXT_STATE, run_dir / STATE)


def save_best(run_dir: Path, model: nn.Module, kind: str, step: int, score: float) -> None:
    """The weights of the best evaluation so far, atomically, with its step and score."""
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "kind": kind, "step": str(step), "score": repr(score)}
    atomic_write(run_dir / BEST, lambda tmp: save_file(weights, str(tmp), metadata=metadata))


def best_score(run_dir: Path) -> float | None:
    """The score of `best.safetensors` (None: there is none)."""
    if not (run_dir / BEST).is_file():
        return None
    return float(_metadata(run_dir / BEST).get("score", "inf"))


def _metadata(path: Path) -> dict[str, str]:
    with open(path, "rb") as f:  # header: 8-byte length, then JSON with __metadata__
        n = int.from_bytes(f.read(8), "little")
        meta: dict[str, str] = json.loads(f.read(n)).get("__metadata__", {})
    return meta


def read_config(run_dir: Path) -> RunConfig:
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run folder (no such folder)")
    missing = [n for n in REQUIRED if not (run_dir / n).is_file()]
    if missing:
        raise CheckpointError(
            f"{run_dir} is not a complete run folder: missing {', '.join(missing)}; "
            "point to a folder written by a sentcli training command"
        )
    try:
        d = json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{run_dir / CONFIG} is corrupt ({e}); re-create the run") from e
    if not isinstance(d, dict):
        raise CheckpointError(f"{run_dir / CONFIG} is not a sentcli run config")
    return RunConfig.from_dict(d)


def load_weights(run_dir: Path, name: str = WEIGHTS) -> tuple[dict[str, torch.Tensor], int]:
    """The state dict and the step it was saved at (safetensors: loading never runs code)."""
    path = run_dir / name
    try:
        weights = load_file(str(path))
        meta = _metadata(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is corrupt or not safetensors ({e}); re-create the run"
        ) from e
    return weights, int(meta.get("step", 0))


def weight_shapes(run_dir: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the safetensors header alone (no tensor is read)."""
    path = run_dir / WEIGHTS
    try:
        with open(path, "rb") as f:  # 8-byte little-endian length, then that much JSON
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= min(path.stat().st_size - 8, 100_000_000):
                raise ValueError(f"a header of {size:,} bytes")
            header = json.loads(f.read(size))
        return {
            k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(
            f"{path} is corrupt or not safetensors ({e}); re-create the run"
        ) from e


def check_shapes(config: RunConfig, run_dir: Path) -> None:
    """config.json against the weights' header, before the model is built: a config that
    asks for a million blocks or a vocabulary of 10^11 (a damaged or hostile run folder)
    is refused instead of allocating until the machine runs out of memory. Once the sizes
    that allocate agree, loading the weights strictly checks every tensor."""
    shapes = weight_shapes(run_dir)
    m = config.model

    def dim(name: str, i: int) -> int | None:
        shape = shapes.get(name)
        return shape[i] if shape is not None and len(shape) > i else None

    blocks = len({k.split(".")[2] for k in shapes if k.startswith("trunk.h.")})
    checks = [
        ("n_layer", m.n_layer, blocks, "blocks"),
        ("vocab_size", m.vocab_size, dim("trunk.wte.weight", 0), "token embeddings"),
        ("n_embd", m.n_embd, dim("trunk.wte.weight", 1), "embedding width"),
        ("block_size", m.block_size, dim("trunk.wpe.weight", 0), "position embeddings"),
    ]
    if m.n_layer == blocks and blocks:
        inner = dim("trunk.h.0.mlp.c_fc.weight", 0)
        checks.append(("n_inner", m.n_inner or 4 * m.n_embd, inner, "MLP width"))
    for t, size in heads(config.tasks, m.n_embd).items():  # what build_model makes heads of
        first = dim(f"heads.{t}.0.weight", 0) or dim(f"heads.{t}.weight", 0)
        if m.head_hidden:
            checks.append(("head_hidden", m.head_hidden, first, f"task {t}'s head"))
        else:
            checks.append((f"task {t}'s head size", size, first, "its labels or teacher_dim"))
    for key, said, held, what in checks:
        if said != held:
            raise CheckpointError(
                f"{run_dir / CONFIG} does not match {run_dir / WEIGHTS}: {key} is {said:,} but "
                f"the weights hold {'none' if held is None else f'{held:,}'} ({what}); the run "
                "is corrupt or from another tool"
            )


def load_run(run_dir: Path) -> tuple[RunConfig, nn.Module, Tokenizer, int]:
    """Rebuild the model from config.json (checked against the weights' shapes first), load
    its weights strictly, check the tokenizer."""
    config = read_config(run_dir)
    check_shapes(config, run_dir)
    model = build_model(config)
    best = config.train.keep_best and (run_dir / BEST).is_file()  # --keep-best: the best
    weights, step = load_weights(run_dir, BEST if best else WEIGHTS)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(
            f"{run_dir / WEIGHTS} does not match config.json ({first}); the run is corrupt or "
            "from another tool"
        ) from e
    tokenizer = load_run_tokenizer(run_dir, config)
    return config, model, tokenizer, step


def load_run_tokenizer(run_dir: Path, config: RunConfig) -> Tokenizer:
    """The run's tokenizer, checked against the model: sentcli's special tokens (an imported
    checkpoint's own tokenizer needs only [PAD] at id 0) and the vocabulary size."""
    path = run_dir / TOKENIZER
    vocab_size = config.model.vocab_size
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception
        raise CheckpointError(f"{path} is corrupt ({str(e)[:120]}); re-create the run") from e
    try:
        check_specials(tokenizer, str(path), pad_only=config.imported is not None)
    except TokenizerError as e:
        raise CheckpointError(str(e)) from e
    imported_fits = config.imported is not None and tokenizer.get_vocab_size() <= vocab_size
    if tokenizer.get_vocab_size() != vocab_size and not imported_fits:
        raise CheckpointError(
            f"{path} has {tokenizer.get_vocab_size()} tokens but the model was built for "
            f"{vocab_size}; the run's tokenizer was replaced, restore the original"
        )
    return tokenizer


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(
            f"{path} is corrupt or unsafe to load ({str(e).splitlines()[0][:160]}); "
            "start a new run without --resume"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a sentcli train state; start a new run")
    return state


def load_train_state(run_dir: Path, step: int) -> dict[str, Any]:
    """The optimizer/RNG/data position saved with the weights (weights_only: no code runs).
    After a kill between the weights and the rename of the new state, the new state is still
    in `train_state.next.pt`: take whichever file matches the weights' step."""
    state = _read_state(run_dir / STATE) if (run_dir / STATE).is_file() else {}
    if state.get("step") != step and (run_dir / NEXT_STATE).is_file():
        following = _read_state(run_dir / NEXT_STATE)
        if following.get("step") == step:
            return following
    if state.get("step") != step:
        raise CheckpointError(
            f"{run_dir / STATE} does not belong to the saved weights (step "
            f"{state.get('step')!r} vs {step}); start a new run without --resume"
        )
    return state


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines):  # the last line, cut by a hard kill: all before it is good
                break
            raise DataError(
                f"{path}: line {n} is not JSON ({e.msg}) and lines follow it; the log is "
                "corrupt: restore it, or delete that line and rerun"
            ) from None
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records logged after `step` (the resume point), so a resumed run's log matches an
    uninterrupted one."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    write_text(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """report/summary.json: what the run's commands print at the end, for machines."""
    (run_dir / "report").mkdir(exist_ok=True)
    write_text(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
