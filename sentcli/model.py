"""The transformer trunk (Pre-LN; Post-LN only for imported BERT checkpoints), its tied
language-model head, masked mean pooling and the multi-task sentence encoder (one shared
trunk, one classification head per task)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from sentcli.config import ModelConfig
from sentcli.device import amx


def key_padding_mask(attention_mask: torch.Tensor, additive: bool = False) -> torch.Tensor:
    """[B, T] bool (True = real token) → [B, 1, 1, T] mask that SDPA broadcasts over heads
    and queries: every query may attend to every real key, never to padding. `additive`: as
    a float bias (0 or the lowest float) instead of booleans, which an exported graph runs
    faster (ONNX: a boolean mask adds IsNaN/Where passes over every score matrix)."""
    mask = attention_mask.bool()[:, None, None, :]
    if additive:
        return (~mask).float() * torch.finfo(torch.float32).min
    return mask


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' vectors: [B, T, C], [B, T] → [B, C]. Padding never counts."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    summed = (hidden * mask).sum(dim=1)  # [B, C]
    count = mask.sum(dim=1).clamp(min=1.0)  # [B, 1]; clamp guards an all-padding row
    return summed / count


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence vectors [B, C] from [B, T, C]: masked mean (default), the first token's
    state (cls) or the masked maximum (max)."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(~attention_mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    return mean_pool(hidden, attention_mask)


Attention = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, bool, float], torch.Tensor
]
"""q, k, v [B, nh, T, hs], key mask [B, 1, 1, T] or None, causal, dropout → [B, nh, T, hs]."""


CPU_AMX = amx()
"""Probed once, at import: torch.compile cannot trace the probe, and a constant it can."""


def fp32_training_attention(q: torch.Tensor) -> bool:
    """Whether a bf16 training step runs its attention in fp32: on a CPU without AMX, where
    SDPA's bf16 kernel trains at about half its fp32 speed (forward + backward of 32 × 4
    heads × 64 tokens: 12.9 ms in bf16, 6.3 ms in fp32 on AVX512-BF16; docs/benchmarks.md)."""
    return q.dtype == torch.bfloat16 and q.device.type == "cpu" and q.requires_grad and not CPU_AMX


def sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout: float,
) -> torch.Tensor:
    # Causal attention ignores `mask`: padding is on the right, so a real token never sees
    # it, and is_causal keeps SDPA on its fastest kernel.
    mask = None if causal else mask
    if fp32_training_attention(q):
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout,
                is_causal=causal,
            )  # fmt: skip
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal
    )


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.attn_dropout
        # CPU bf16 inference swaps in a faster kernel (inference/onednn.matmul_attention)
        self.attention: Attention = sdpa
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # fused QKV
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # [B, nh, T, hs]
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # [B, nh, T, hs]
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # [B, nh, T, hs]
        y = self.attention(q, k, v, mask, causal, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # [B, T, C]
        out: torch.Tensor = self.resid_dropout(self.c_proj(y))
        return out


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, inner, bias=config.bias)
        self.c_proj = nn.Linear(inner, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        # a module, not F.gelu: CPU bf16 inference folds it into c_fc (inference/onednn.py)
        self.act: nn.Module = nn.GELU("tanh" if config.activation == "gelu_tanh" else "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dropout(self.c_proj(self.act(self.c_fc(x))))
        return out


def layer_norm(config: ModelConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.post_norm = config.norm == "post"
        self.ln_1 = layer_norm(config)
        self.attn = SelfAttention(config)
        self.ln_2 = layer_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        if self.post_norm:  # BERT: normalise each residual sum
            x = self.ln_1(x + self.attn(x, mask, causal))
            out: torch.Tensor = self.ln_2(x + self.mlp(x))
            return out
        x = x + self.attn(self.ln_1(x), mask, causal)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """Token + learned position embeddings, `n_layer` Pre-LN blocks, final LayerNorm (or,
    for imported BERT-family weights, a LayerNorm on the embeddings and Post-LN blocks)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.ln_e = layer_norm(config) if config.embed_norm else nn.Identity()
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = layer_norm(config) if config.norm == "pre" else nn.Identity()

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        additive: bool = False,
        padded: bool | None = None,
    ) -> torch.Tensor:
        """[B, T] token ids (and [B, T] mask, true = real) → hidden states [B, T, C].
        `additive`: mask with a float bias (see key_padding_mask). `padded`: whether the
        batch has padding, when the caller knows it from the lengths (None: look)."""
        B, T = idx.size()
        if self.config.block_size < T:
            raise ValueError(f"sequence of {T} tokens > block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.ln_e(self.wte(idx) + self.wpe(pos)))  # [B, T, C]
        mask = None
        # All-real batches need no mask and SDPA then takes its fastest path. Training says
        # so from the lengths (`padded`); otherwise looking is a host sync, so only on the
        # CPU and never in a traced graph (torch.compile, ONNX export), which must mask
        # whatever its inputs.
        if padded is None:
            padded = (
                attention_mask is None
                or attention_mask.device.type != "cpu"
                or torch.compiler.is_compiling()
                or not attention_mask.all()
            )
        if attention_mask is not None and not self.config.causal and padded:
            mask = key_padding_mask(attention_mask, additive)
        for block in self.h:
            x = block(x, mask, self.config.causal)
        out: torch.Tensor = self.ln_f(x)
        return out


def init_weights(model: nn.Module, n_layer: int, embed_std: float) -> None:
    """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layer),
    token embeddings N(0, embed_std)."""
    for name, p in model.named_parameters():
        if name.endswith("wte.weight"):
            torch.nn.init.normal_(p, mean=0.0, std=embed_std)
        elif p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
            torch.nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)


def training_flops_per_token(config: ModelConfig, seq_len: float, lm_head: bool) -> float:
    """Model FLOPs to train on one token (forward + backward = 3 × forward): 6 per matmul
    weight, plus attention's QK^T and AV (12 · layers · width · sequence length), plus the
    tied vocabulary projection for a language model. Padding is not counted."""
    c, inner = config.n_embd, config.n_inner or 4 * config.n_embd
    matmul = config.n_layer * (4 * c * c + 2 * c * inner)
    flops = 6 * matmul + 12 * config.n_layer * c * seq_len
    return flops + (6 * c * config.vocab_size if lm_head else 0)


class LanguageModel(nn.Module):
    """Trunk + LM head tied to the token embeddings (for next-token or masked-LM training)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.trunk = Transformer(config)
        init_weights(self, config.n_layer, config.embed_std or 0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Without targets: (logits [B, T, vocab], None). With targets: (logits [N, vocab] of
        the positions with a target != -100, their mean cross-entropy)."""
        h = self.trunk(idx)  # [B, T, C]
        if targets is None:
            return F.linear(h, self.trunk.wte.weight), None
        if self.trunk.config.causal:  # every position has a target
            h, targets = h.view(-1, h.size(-1)), targets.reshape(-1)  # [B*T, C], [B*T]
        else:  # masked-LM: only masked positions reach the vocab projection (~85 % saved)
            keep = targets != -100
            h, targets = h[keep], targets[keep]  # [N, C], [N]
        logits = F.linear(h, self.trunk.wte.weight)  # [N, vocab]
        return logits, F.cross_entropy(logits.float(), targets, ignore_index=-100)


def make_head(n_embd: int, n_labels: int, hidden: int, dropout: float) -> nn.Module:
    if hidden == 0:
        return nn.Linear(n_embd, n_labels)
    return nn.Sequential(
        nn.Linear(n_embd, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_labels)
    )


class MultiTaskModel(nn.Module):
    """Sentence encoder (trunk + masked mean pooling) with one classification head per task."""

    def __init__(self, config: ModelConfig, tasks: dict[str, int]) -> None:
        super().__init__()
        self.config = config
        self.trunk = Transformer(config)
        self.heads = nn.ModuleDict(
            {
                name: make_head(config.n_embd, n, config.head_hidden, config.dropout)
                for name, n in tasks.items()
            }
        )
        init_weights(self, config.n_layer, config.embed_std or 0.02)

    def embed(
        self, idx: torch.Tensor, attention_mask: torch.Tensor, padded: bool | None = None
    ) -> torch.Tensor:
        """Sentence vectors [B, C] (not normalised) of [B, T] ids and mask."""
        hidden = self.trunk(idx, attention_mask, padded=padded)
        return pool(hidden, attention_mask, self.config.pooling)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        task: str,
        labels: torch.Tensor | None = None,
        padded: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, n_labels] of `task`'s head and, given int labels [B], the mean CE loss."""
        logits = self.heads[task](self.embed(input_ids, attention_mask, padded))
        if labels is None:
            return logits, None
        return logits, F.cross_entropy(logits.float(), labels)
