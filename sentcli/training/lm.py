"""The language-model recipe: next-token prediction (clm, the default) or masked-LM over
texts packed into blocks; validation loss and perplexity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tokenizers import Tokenizer

from sentcli import checkpoint as ckpt
from sentcli import dist
from sentcli.config import Objective, RunConfig
from sentcli.data.batching import TokenBuckets, pack_texts, shuffled_batches
from sentcli.data.tasks import split_texts
from sentcli.device import autocast, seed_everything, to_device
from sentcli.events import OnEvent
from sentcli.metrics import history_of, throughput
from sentcli.model import LanguageModel, training_flops_per_token
from sentcli.tokenizer import MASK_ID, SPECIAL_TOKENS
from sentcli.training.runner import TrainResult, run_training


def mask_tokens(
    ids: torch.Tensor, probability: float, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `probability` of the non-special tokens as targets; of those 80 %
    become [MASK], 10 % a random token, 10 % stay. Returns (inputs, targets with -100)."""
    n_special = len(SPECIAL_TOKENS)  # never masked, never drawn as random replacements
    chosen = (torch.rand(ids.shape, device=ids.device) < probability) & (ids >= n_special)
    targets = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, device=ids.device)
    random_ids = torch.randint(n_special, vocab_size, ids.shape, device=ids.device)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, MASK_ID), ids)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, targets


class LMRecipe:
    """Batches are index arrays into the packed training blocks [N, block_size + 1]."""

    def __init__(
        self,
        model: LanguageModel,
        config: RunConfig,
        train_blocks: np.ndarray,
        val_blocks: np.ndarray,
        rt: dist.Runtime,
    ) -> None:
        self.model, self.cfg, self.mcfg = model, config.train, config.model
        self.train_blocks, self.val_blocks = train_blocks, val_blocks
        self.device, self.ranks, self.dtype = rt.device, rt.ranks, rt.dtype

    def step_module(self) -> nn.Module:
        return self.model

    def epoch_batches(self, epoch: int) -> Sequence[np.ndarray]:
        cfg, ranks = self.cfg, self.ranks
        if cfg.batch_tokens:  # fixed shapes: whole batches of blocks only
            rows = TokenBuckets(cfg.batch_tokens, self.mcfg.block_size, 1, ranks.world)
            n = rows.rows(self.mcfg.block_size)
            batches = shuffled_batches(len(self.train_blocks), n, cfg.seed, epoch)
            return [b for b in batches if len(b) == n]
        batches = shuffled_batches(len(self.train_blocks), cfg.batch_size, cfg.seed, epoch)
        return [b for b in batches if dist.usable(b, ranks)]

    def batch_loss(self, module: nn.Module, blocks: np.ndarray) -> torch.Tensor:
        x = to_device(torch.from_numpy(blocks.astype(np.int64)), self.device)  # [B, T+1]
        if self.cfg.objective == Objective.clm:
            _, loss = module(x[:, :-1], x[:, 1:])
        else:
            inputs, targets = mask_tokens(x[:, :-1], self.cfg.mlm_probability, self.mcfg.vocab_size)
            _, loss = module(inputs, targets)
        assert isinstance(loss, torch.Tensor)
        return loss

    def loss(
        self, module: nn.Module, batch: np.ndarray
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        loss = self.batch_loss(module, self.train_blocks[dist.shard(batch, self.ranks)])
        return loss * dist.share(batch, self.ranks), len(batch) * self.mcfg.block_size, {}

    def evaluate(self) -> dict[str, Any]:
        cfg, ranks = self.cfg, self.ranks
        state = torch.get_rng_state()  # MLM masking draws; keep the training RNG stream intact
        torch.manual_seed(cfg.seed + ranks.rank)
        dtype = self.dtype
        loss_sum, blocks_seen = 0.0, 0.0
        with torch.no_grad():
            for i in range(0, len(self.val_blocks), cfg.batch_size):
                blocks = dist.shard(self.val_blocks[i : i + cfg.batch_size], ranks)
                if len(blocks):
                    with autocast(self.device, dtype):
                        loss_sum += self.batch_loss(self.model, blocks).item() * len(blocks)
                    blocks_seen += len(blocks)
        torch.set_rng_state(state)
        loss_sum, blocks_seen = dist.total([loss_sum, blocks_seen], ranks)
        val_loss = loss_sum / max(blocks_seen, 1)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0))}

    def on_epoch(self, epoch: int) -> bool:
        return False  # everything trains, every epoch

    def group_of(self, name: str) -> str | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def train_lm(
    config: RunConfig,
    tok: Tokenizer,
    output: Path,
    text_column: str | None,
    resume: bool,
    on_event: OnEvent,
) -> TrainResult:
    """Pack the texts, build the model and train it into run folder `output`."""
    cfg, mcfg = config.train, config.model
    rt = dist.runtime(cfg.device, cfg.precision)
    ranks = rt.ranks
    dist.check_global_batch(cfg.batch_size, ranks)
    train_texts, val_texts = split_texts(config.data, text_column, cfg.val_fraction, cfg.seed)
    train_blocks = pack_texts(tok, train_texts, mcfg.block_size, "training")
    val_blocks = pack_texts(tok, val_texts, mcfg.block_size, "validation")
    val_blocks = val_blocks[: cfg.max_eval_batches * cfg.batch_size]
    dist.barrier(ranks)  # every rank has checked the output folder before it is created
    if not resume and ranks.main:
        ckpt.create_run_dir(output)
    seed_everything(cfg.seed)
    model = LanguageModel(mcfg)
    recipe = LMRecipe(model, config, train_blocks, val_blocks, rt)
    run = run_training(output, config, model, tok, recipe, rt, resume, on_event)
    history = history_of(run.records)
    flops = training_flops_per_token(mcfg, mcfg.block_size, lm_head=True)
    speed = throughput(run.records, flops, rt.device)
    summary = {"kind": "lm", "steps": run.steps, "tokens_seen": run.seen, "history": history}
    summary["throughput"] = speed
    summary |= dist.check_weights_agree(model, ranks)
    if ranks.main:
        ckpt.write_summary(output, summary)
    return TrainResult(
        output, config, run.steps, run.seen, run.interrupted, history, throughput=speed
    )
