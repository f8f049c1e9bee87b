import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sentcli import api, device
from sentcli import checkpoint as ckpt
from sentcli.config import TrainConfig
from sentcli.device import resolve_device, resolve_precision
from sentcli.errors import ConfigError
from sentcli.model import MultiTaskModel
from sentcli.training.loop import get_lr, make_optimizer, total_steps

from helpers import FAST, FLAGS, NATIVE_BF16


def test_get_lr_hits_its_endpoints() -> None:
    lr, warmup, total, min_lr = 1e-3, 10, 100, 1e-4
    assert get_lr(0, lr, warmup, total, min_lr) == pytest.approx(lr / 11)
    assert get_lr(warmup, lr, warmup, total, min_lr) == pytest.approx(lr)
    assert get_lr(total, lr, warmup, total, min_lr) == pytest.approx(min_lr)
    mid = get_lr(55, lr, warmup, total, min_lr)
    assert mid == pytest.approx(min_lr + 0.5 * (lr - min_lr))
    values = [get_lr(s, lr, warmup, total, min_lr) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay
    assert not math.isnan(get_lr(5, lr, 0, 0, min_lr))


def test_optimizer_sees_only_trainable_params_with_decay_split(tiny_config) -> None:
    model = MultiTaskModel(tiny_config, {"t": 2})
    for p in model.trunk.wte.parameters():
        p.requires_grad = False
    opt = make_optimizer(model, 1e-3, 0.1, backbone_lr_scale=0.1)
    seen = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.trunk.wte.weight) not in seen
    assert seen == {id(p) for p in model.parameters() if p.requires_grad}
    for g in opt.param_groups:
        assert all(p.dim() >= 2 for p in g["params"]) == (g["weight_decay"] == 0.1)
    trunk = {id(p) for p in model.trunk.parameters()}
    for g in opt.param_groups:
        in_trunk = {id(p) in trunk for p in g["params"]}
        assert len(in_trunk) == 1 and g["lr_scale"] == (0.1 if in_trunk.pop() else 1.0)


def test_group_norms_match_a_manual_computation_then_clip(tiny_config) -> None:
    """Per-group and global norms from the one-kernel path equal each group's gradients'
    norm computed by hand; a head without a gradient is marked absent; clipping follows."""
    from sentcli.freeze import group_of
    from sentcli.training.loop import GroupNorms

    model = MultiTaskModel(tiny_config, {"t": 2, "u": 3})
    ids = torch.randint(5, 100, (3, 6))
    _, loss = model(ids, torch.ones_like(ids, dtype=torch.bool), "t", torch.tensor([0, 1, 0]))
    loss.backward()
    norms = GroupNorms(model, group_of, torch.device("cpu"))
    assert norms.groups == ["embeddings", "block.0", "block.1", "final_norm", "head.t", "head.u"]
    params = list(model.parameters())
    expected = {
        g: torch.cat([p.grad.ravel() for n, p in model.named_parameters() if group_of(n) == g])
        .norm()
        .item()
        for g in norms.groups[:-1]
    }
    total_expected = torch.cat([p.grad.ravel() for p in params if p.grad is not None]).norm()
    measured = norms(params, clip=0.05)
    assert measured is not None and measured[1] is not None
    total, (by_group, has) = measured
    assert has.tolist() == [1, 1, 1, 1, 1, 0]  # head.u had no gradient
    assert by_group[:-1].tolist() == pytest.approx(list(expected.values()), rel=1e-5)
    assert total.item() == pytest.approx(total_expected.item(), rel=1e-5)
    clipped = torch.cat([p.grad.ravel() for p in params if p.grad is not None]).norm()
    assert clipped.item() == pytest.approx(min(0.05, total_expected.item()), rel=1e-4)
    assert has.dtype == np.int64  # step counts (the log window adds them up)

    # Next step: task u only, the final norm in no group, no clipping. A new set of
    # parameters with gradients gets its own index (not the first step's).
    model.zero_grad(set_to_none=True)
    _, loss = model(ids, torch.ones_like(ids, dtype=torch.bool), "u", torch.tensor([0, 1, 2]))
    loss.backward()

    def grouped(name: str) -> str | None:
        return None if "ln_f" in name else group_of(name)

    norms = GroupNorms(model, grouped, torch.device("cpu"))
    before = [p.grad.clone() for p in params if p.grad is not None]
    total, (by_group, has) = norms(params, clip=0)  # type: ignore[misc]  # not None here
    assert norms.groups == ["embeddings", "block.0", "block.1", "head.t", "head.u"]
    assert has.tolist() == [1, 1, 1, 0, 1]
    head_u = torch.cat([p.grad.ravel() for p in model.heads["u"].parameters()]).norm()
    assert by_group[4].item() == pytest.approx(head_u.item(), rel=1e-5) and by_group[3] == 0
    everything = torch.cat([g.ravel() for g in before]).norm()  # ln_f counts in the total
    assert total.item() == pytest.approx(everything.item(), rel=1e-5)
    after = [p.grad for p in params if p.grad is not None]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # clip 0: none


def test_total_steps_respects_max_steps() -> None:
    assert total_steps(TrainConfig(epochs=3), 10) == 30
    assert total_steps(TrainConfig(epochs=3, max_steps=7), 10) == 7


def test_device_and_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_instructions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`auto` on an x86 CPU: bf16 exactly where /proc/cpuinfo lists AVX512-BF16 or AMX-BF16,
    not where oneDNN only emulates it (AVX-512 without BF16: several times slower than fp32);
    off x86, oneDNN's answer."""
    cpu = torch.device("cpu")
    if device.x86() and FLAGS:
        assert (resolve_precision("auto", cpu) == torch.bfloat16) is NATIVE_BF16
    monkeypatch.setattr(device, "mkldnn_bf16", lambda: True)  # emulated: oneDNN says yes
    monkeypatch.setattr(device, "native_cpu_bf16", lambda: False)
    monkeypatch.setattr(device, "x86", lambda: True)
    assert resolve_precision("auto", cpu) is None
    monkeypatch.setattr(device, "native_cpu_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(device, "x86", lambda: False)  # ARM: oneDNN says yes with bf16 only
    monkeypatch.setattr(device, "native_cpu_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(device, "mkldnn_bf16", lambda: False)
    assert resolve_precision("auto", cpu) is None


@pytest.mark.slow
# torch.compile goes through torch.jit internals that warn about their own deprecation
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_trains_like_eager(
    tmp_path: Path, topic_dir: Path, sentiment_dir: Path, tokenizer_path: Path
) -> None:
    """--compile (torch.compile of the multi-task step, inductor on CPU) gives eager's losses."""
    tasks = [
        api.TaskConfig("topic", str(topic_dir)),
        api.TaskConfig("sentiment", str(sentiment_dir)),
    ]
    opts = {**FAST, "n_layer": 1, "max_steps": 4, "log_every": 1, "batch_size": 16}
    losses = []
    for compiled in (False, True):
        run = tmp_path / f"c{compiled}"
        api.train_mtl(tasks, run, tokenizer=tokenizer_path, options={**opts, "compile": compiled})
        losses.append([r["loss"] for r in ckpt.read_metrics(run) if r["kind"] == "train"])
    assert len(losses[1]) == 4
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_the_clock_moves_the_decay_on() -> None:
    assert get_lr(50, 1.0, 10, 1000, 0.1, clock=0.0) > 0.99
    assert get_lr(50, 1.0, 10, 1000, 0.1, clock=0.5) == pytest.approx(0.55)
    assert get_lr(50, 1.0, 10, 1000, 0.1, clock=1.0) == 0.1
    assert get_lr(5, 1.0, 10, 1000, 0.1, clock=0.9) < 1.0  # warmup still counts steps


def test_max_time_stops_on_the_clock_with_a_final_evaluation(
    tmp_path: Path, corpus_file: Path, tokenizer_path: Path
) -> None:
    opts = {**FAST, "epochs": 1000, "max_time": 2.0, "log_every": 1, "max_eval_batches": 1}
    result = api.pretrain([str(corpus_file)], tmp_path / "lm", tokenizer_path, opts)
    records = ckpt.read_metrics(tmp_path / "lm")
    train = [r for r in records if r["kind"] == "train"]
    assert 1 < result.steps == train[-1]["step"] and records[-1]["kind"] == "eval"
    assert records[-1]["step"] == result.steps and 2.0 <= train[-1]["elapsed"] < 10.0
    assert train[-1]["lr"] == pytest.approx(1e-3 * 0.1)  # the schedule ended with the clock
    assert ckpt.load_train_state(tmp_path / "lm", result.steps)["elapsed"] >= 2.0


def test_mask_tokens_picks_its_share_and_splits_it_80_10_10() -> None:
    """BERT masking on 60,000 ids, a fifth of them special tokens: the share picked of the
    others, and of those the [MASK] / random / kept split, each within five binomial standard
    deviations; special tokens are never picked nor drawn as replacements."""
    from sentcli.tokenizer import MASK_ID, SPECIAL_TOKENS
    from sentcli.training.lm import mask_tokens

    torch.manual_seed(0)
    vocab, n_special = 400, len(SPECIAL_TOKENS)
    ids = torch.randint(n_special, vocab, (300, 200))
    special = torch.rand(ids.shape) < 0.2
    ids[special] = torch.randint(0, n_special, (int(special.sum()),))
    inputs, targets = mask_tokens(ids, 0.15, vocab)

    def within(count: int, n: int, p: float) -> bool:
        return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))

    picked = targets != -100
    assert torch.equal(targets[picked], ids[picked])  # a target is the original token
    assert not picked[special].any() and torch.equal(inputs[special], ids[special])
    assert within(int(picked.sum()), int((~special).sum()), 0.15)
    assert torch.equal(inputs[~picked], ids[~picked])  # what is not picked stays as it was
    n = int(picked.sum())
    masked = inputs[picked] == MASK_ID
    kept = inputs[picked] == ids[picked]
    swapped = ~masked & ~kept
    assert within(int(masked.sum()), n, 0.8)
    assert within(int(swapped.sum()), n, 0.1 * (1 - 1 / (vocab - n_special)))
    assert within(int(kept.sum()), n, 0.1 + 0.1 / (vocab - n_special))
    drawn = inputs[picked][swapped]
    assert drawn.min() >= n_special and drawn.max() < vocab and len(drawn.unique()) > 300
    assert (mask_tokens(ids, 0.0, vocab)[1] == -100).all()
    assert torch.equal(mask_tokens(ids, 1.0, vocab)[1] != -100, ~special)
