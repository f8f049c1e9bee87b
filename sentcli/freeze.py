"""Freeze modes (docs/cli.md, train-mtl): parse a spec, apply it through `requires_grad`
(the only place that touches it), gradual unfreezing, and the named parameter groups
tables report on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch.nn as nn

from sentcli.errors import ConfigError


@dataclass(frozen=True)
class FreezeSpec:
    """What `--freeze` froze. Blocks are counted from the bottom (block 0 is nearest the
    embeddings); gradual unfreezing gives blocks back from the top."""

    embeddings: bool = False
    layers: int = 0
    """The bottom `layers` blocks are frozen."""
    final_norm: bool = False
    heads: frozenset[str] = field(default_factory=frozenset)
    all: bool = False


def _valid(tasks: Sequence[str], n_layer: int) -> str:
    heads = ", ".join(f"head:{t}" for t in tasks)
    return f"none, backbone, embeddings, layers:K (K in 1..{n_layer}), {heads}, all"


def parse_freeze(
    spec: str, tasks: Sequence[str], n_layer: int, headless: Sequence[str] = ()
) -> FreezeSpec:
    """`--freeze` value (comma-separated modes) → FreezeSpec; refuses unknown names and
    combinations that leave a task nothing to train. `tasks` have heads; `headless` tasks
    (similarity) train the backbone only."""
    parts = [p.strip() for p in spec.split(",") if p.strip()] or ["none"]
    embeddings = final_norm = everything = False
    layers = 0
    heads: set[str] = set()
    for part in parts:
        kind, _, arg = part.partition(":")
        if part == "none":
            if len(parts) > 1:
                raise ConfigError(f"--freeze {spec!r}: 'none' cannot be combined with other modes")
        elif part == "backbone":
            embeddings, layers, final_norm = True, n_layer, True
        elif part == "embeddings":
            embeddings = True
        elif part == "all":
            everything = True
        elif kind == "layers" and arg.isdigit() and 1 <= int(arg) <= n_layer:
            embeddings, layers = True, max(layers, int(arg))
        elif kind == "head" and arg in tasks:
            heads.add(arg)
        else:
            raise ConfigError(
                f"--freeze: unknown or invalid mode {part!r}; valid: {_valid(tasks, n_layer)}"
            )
    trunk_frozen = embeddings and layers == n_layer and final_norm
    stuck = sorted(heads) if trunk_frozen and not everything else []
    if trunk_frozen and not everything and headless:
        raise ConfigError(
            f"--freeze {spec!r} leaves task {', '.join(headless)} nothing to train (a similarity "
            "task has no head, and the whole backbone is frozen); freeze fewer layers, or use "
            "'all' to evaluate only"
        )
    if stuck:
        raise ConfigError(
            f"--freeze {spec!r} leaves task {', '.join(stuck)} nothing to train (its head and the "
            "whole backbone are frozen); drop head:NAME or backbone, or use 'all' to evaluate only"
        )
    return FreezeSpec(embeddings, layers, final_norm, frozenset(heads), everything)


def group_of(name: str) -> str:
    """The parameter group a parameter belongs to: embeddings, block.I, final_norm or head.NAME."""
    parts = name.split(".")
    if parts[0] == "heads":
        return f"head.{parts[1]}"
    if parts[1] in ("wte", "wpe", "ln_e"):
        return "embeddings"
    if parts[1] == "h":
        return f"block.{parts[2]}"
    return "final_norm"


def is_frozen(name: str, spec: FreezeSpec, n_layer: int, unfrozen_top: int = 0) -> bool:
    """Whether parameter `name` is frozen, after `unfrozen_top` blocks were given back."""
    if spec.all:
        return True
    group = group_of(name)
    if group.startswith("head."):
        return group[5:] in spec.heads
    if group == "embeddings":
        return spec.embeddings
    if group == "final_norm":
        return spec.final_norm and unfrozen_top == 0
    block = int(group[6:])
    return block < spec.layers and block < n_layer - unfrozen_top


def apply_freeze(model: nn.Module, spec: FreezeSpec, n_layer: int, unfrozen_top: int = 0) -> None:
    """Set `requires_grad` on every parameter by `spec` (frozen: False, else True)."""
    for name, p in model.named_parameters():
        p.requires_grad = not is_frozen(name, spec, n_layer, unfrozen_top)


def parameter_groups(model: nn.Module) -> list[tuple[str, int, bool]]:
    """(group, parameters, trainable) in model order; a group is trainable if any of its
    parameters is."""
    groups: dict[str, list[int | bool]] = {}
    for name, p in model.named_parameters():
        entry = groups.setdefault(group_of(name), [0, False])
        entry[0] = int(entry[0]) + p.numel()
        entry[1] = bool(entry[1]) or p.requires_grad
    return [(g, int(n), bool(t)) for g, (n, t) in groups.items()]
