from collections.abc import Sequence

import pytest
import torch

from sentcli.config import ModelConfig
from sentcli.errors import ConfigError
from sentcli.freeze import apply_freeze, parameter_groups, parse_freeze
from sentcli.model import MultiTaskModel
from sentcli.training.loop import make_optimizer

TASKS = ["topic", "sentiment"]
EMB = {"trunk.wte.weight", "trunk.wpe.weight"}
NORM = {"trunk.ln_f.weight", "trunk.ln_f.bias"}


def block(i: int) -> set[str]:
    names = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias"]
    names += ["attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias"]
    names += ["mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]
    return {f"trunk.h.{i}.{n}" for n in names}


def head(t: str) -> set[str]:
    return {f"heads.{t}.weight", f"heads.{t}.bias"}


ALL = EMB | NORM | block(0) | block(1) | head("topic") | head("sentiment")
EXPECTED = {
    "none": ALL,
    "backbone": head("topic") | head("sentiment"),
    "embeddings": ALL - EMB,
    "layers:1": ALL - EMB - block(0),
    "head:topic": ALL - head("topic"),
    "embeddings,head:sentiment": ALL - EMB - head("sentiment"),
    "all": set(),
}


@pytest.fixture
def model(tiny_config: ModelConfig) -> MultiTaskModel:
    return MultiTaskModel(tiny_config, {"topic": 4, "sentiment": 2})


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("spec", list(EXPECTED))
def test_exact_trainable_set(model: MultiTaskModel, spec: str) -> None:
    assert {n for n, _ in model.named_parameters()} == ALL
    apply_freeze(model, parse_freeze(spec, TASKS, 2), 2)
    assert trainable(model) == EXPECTED[spec]


@pytest.mark.parametrize("spec", ["backbone", "layers:1", "head:topic", "embeddings"])
def test_frozen_stay_bit_identical_and_trainable_change(model: MultiTaskModel, spec: str) -> None:
    apply_freeze(model, parse_freeze(spec, TASKS, 2), 2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, 1e-2, 0.1)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    ids = torch.randint(5, 100, (4, 7))
    mask = torch.ones_like(ids, dtype=torch.bool)
    for _ in range(3):
        for task, n in (("topic", 4), ("sentiment", 2)):
            _, loss = model(ids, mask, task, torch.randint(0, n, (4,)))
            loss.backward()
        opt.step()
        opt.zero_grad()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name


def test_gradual_unfreezing_gives_blocks_back_from_the_top(model: MultiTaskModel) -> None:
    spec = parse_freeze("backbone", TASKS, 2)
    heads = head("topic") | head("sentiment")
    apply_freeze(model, spec, 2, unfrozen_top=1)
    assert trainable(model) == heads | NORM | block(1)
    apply_freeze(model, spec, 2, unfrozen_top=2)
    assert trainable(model) == heads | NORM | block(1) | block(0)


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            "layers:3",
            "valid: none, backbone, embeddings, layers:K (K in 1..2), "
            "head:topic, head:sentiment, all",
        ),
        ("head:nope", "unknown or invalid mode 'head:nope'"),
        ("backbone,head:topic", "leaves task topic nothing to train"),
        ("none,backbone", "cannot be combined"),
    ],
)
def test_invalid_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_freeze(spec, TASKS, 2)


def test_parameter_groups_table(model: MultiTaskModel) -> None:
    apply_freeze(model, parse_freeze("layers:1", TASKS, 2), 2)
    groups = {g: (n, t) for g, n, t in parameter_groups(model)}
    assert list(groups) == [
        "embeddings",
        "block.0",
        "block.1",
        "final_norm",
        "head.topic",
        "head.sentiment",
    ]
    assert groups["embeddings"][1] is False and groups["block.0"][1] is False
    assert groups["block.1"][1] is True
    assert sum(n for n, _ in groups.values()) == sum(p.numel() for p in model.parameters())


REFUSALS = [
    (("backbone", ["topic"], 2, ["sts", "simcse"]),
     "--freeze 'backbone' leaves task sts, simcse nothing to train (a similarity task has "
     "no head, and the whole backbone is frozen); freeze fewer layers, or use 'all' to "
     "evaluate only"),
    (("backbone,head:topic,head:sentiment", TASKS, 2, ()),
     "--freeze 'backbone,head:topic,head:sentiment' leaves task sentiment, topic nothing to "
     "train (its head and the whole backbone are frozen); drop head:NAME or backbone, or "
     "use 'all' to evaluate only"),
    (("layers:3", TASKS, 2, ()),
     "--freeze: unknown or invalid mode 'layers:3'; valid: none, backbone, embeddings, "
     "layers:K (K in 1..2), head:topic, head:sentiment, all"),
]  # fmt: skip


@pytest.mark.parametrize("args,message", REFUSALS)
def test_refusals_say_what_is_left_untrained_and_how_to_fix_it(
    args: tuple[str, list[str], int, Sequence[str]], message: str
) -> None:
    mode, tasks, layers, headless = args
    with pytest.raises(ConfigError) as e:
        parse_freeze(mode, tasks, layers, headless=list(headless))
    assert str(e.value) == message


def test_what_is_not_the_whole_backbone_leaves_heads_and_similarity_tasks_free() -> None:
    # every block and the embeddings, but not the final LayerNorm: not the whole backbone
    spec = parse_freeze("layers:2,head:topic", TASKS, 2, headless=["sts"])
    assert spec.embeddings and spec.layers == 2 and not spec.final_norm
    assert spec.heads == {"topic"} and not spec.all
    assert parse_freeze("all,backbone", TASKS, 2, headless=["sts"]).all  # evaluation only
    empty = parse_freeze(" , ", TASKS, 2)  # nothing given: none
    assert (empty.embeddings, empty.layers, empty.final_norm, empty.all) == (False, 0, False, False)
    assert parse_freeze("layers:1,layers:2", TASKS, 2).layers == 2  # the deepest wins


def test_groups_of_an_imported_berts_embedding_norm(tiny_config: ModelConfig) -> None:
    from dataclasses import replace

    from sentcli.freeze import group_of

    bert = MultiTaskModel(replace(tiny_config, embed_norm=True, norm="post"), {"t": 2})
    assert group_of("trunk.ln_e.weight") == "embeddings" and group_of("heads.t.0.bias") == "head.t"
    apply_freeze(bert, parse_freeze("embeddings", ["t"], 2), 2)
    frozen = {n for n, p in bert.named_parameters() if not p.requires_grad}
    assert frozen == {
        "trunk.wte.weight",
        "trunk.wpe.weight",
        "trunk.ln_e.weight",
        "trunk.ln_e.bias",
    }
