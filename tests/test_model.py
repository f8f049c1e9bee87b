import pytest
import torch

from sentcli.config import ModelConfig
from sentcli.data.batching import collate
from sentcli.model import LanguageModel, MultiTaskModel, key_padding_mask, mean_pool


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    pooled = mean_pool(hidden, mask)
    assert torch.allclose(pooled[0], hidden[0, :2].mean(0))
    assert torch.allclose(pooled[1], hidden[1].mean(0))
    hidden[0, 2:] = 1e6  # whatever sits under padding must not matter
    assert torch.allclose(mean_pool(hidden, mask)[0], pooled[0])


def test_key_padding_mask_shape() -> None:
    mask = torch.tensor([[True, False]])
    assert key_padding_mask(mask).shape == (1, 1, 1, 2)


def test_causal_mask_future_tokens_do_not_change_the_past(tiny_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = LanguageModel(tiny_config).eval()
    x = torch.randint(5, tiny_config.vocab_size, (1, 12))
    y = x.clone()
    y[0, 7] = (x[0, 7] + 1) % tiny_config.vocab_size
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(y)
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert not torch.allclose(a[0, 7:], b[0, 7:])


def test_lm_loss_and_logits_shapes(tiny_config: ModelConfig) -> None:
    model = LanguageModel(tiny_config)
    x = torch.randint(5, tiny_config.vocab_size, (3, 9))
    logits, loss = model(x[:, :-1], x[:, 1:])
    assert logits.shape == (3 * 8, tiny_config.vocab_size)
    assert loss is not None and loss.ndim == 0
    # untrained: loss near ln(vocab)
    assert abs(loss.item() - torch.log(torch.tensor(float(tiny_config.vocab_size)))) < 1.0


def _vector_alone_and_padded(
    model: MultiTaskModel, vocab: int
) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    text = torch.randint(5, vocab, (6,)).numpy()
    longer = torch.randint(5, vocab, (14,)).numpy()
    with torch.no_grad():
        alone = model.embed(*collate([text]))[0]
        padded = model.embed(*collate([longer, text]))[1]
    return alone, padded


def test_pooled_vector_does_not_depend_on_batch_bidirectional(tiny_config: ModelConfig) -> None:
    tiny_config.causal = False
    model = MultiTaskModel(tiny_config, {"t": 3}).eval()
    alone, padded = _vector_alone_and_padded(model, tiny_config.vocab_size)
    assert torch.allclose(alone, padded, atol=1e-5)


def test_pooled_vector_does_not_depend_on_batch_causal(tiny_config: ModelConfig) -> None:
    tiny_config.causal = True
    model = MultiTaskModel(tiny_config, {"t": 3}).eval()
    alone, padded = _vector_alone_and_padded(model, tiny_config.vocab_size)
    assert torch.allclose(alone, padded, atol=1e-5)


def test_multitask_heads_live_in_the_model(tiny_config: ModelConfig) -> None:
    tiny_config.head_hidden = 8
    model = MultiTaskModel(tiny_config, {"topic": 4, "sentiment": 2})
    names = {n for n, _ in model.named_parameters()}
    assert {"heads.topic.0.weight", "heads.sentiment.3.bias"} <= names
    ids, mask = collate([torch.arange(5, 10).numpy(), torch.arange(5, 8).numpy()])
    logits, loss = model(ids, mask, "sentiment", torch.tensor([0, 1]))
    assert logits.shape == (2, 2) and loss is not None
    assert model(ids, mask, "topic")[0].shape == (2, 4)


def reference_trunk(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trunk's forward written out from its weights alone (plain tensor ops, no module
    of sentcli's): embeddings, then per block attention (bidirectional, padding keys masked)
    and MLP, Pre-LN or Post-LN as configured, then the final LayerNorm."""
    import math

    c = model.config
    w = {k: v.detach() for k, v in model.state_dict().items()}
    nh, C = c.n_head, c.n_embd
    hs = C // nh

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + c.norm_eps) * w[f"{name}.weight"]
        return y + w[f"{name}.bias"] if c.bias else y

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        y = x @ w[f"{name}.weight"].T
        return y + w[f"{name}.bias"] if c.bias else y

    def gelu(x: torch.Tensor) -> torch.Tensor:
        if c.activation == "gelu":
            return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    B, T = ids.shape
    x = w["trunk.wte.weight"][ids] + w["trunk.wpe.weight"][:T]
    if c.embed_norm:
        x = ln(x, "trunk.ln_e")

    def attn(h: torch.Tensor, p: str) -> torch.Tensor:
        qkv = linear(h, p + "attn.c_attn")
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in qkv.split(C, dim=-1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hs)  # [B, nh, T, T]
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        return linear(y, p + "attn.c_proj")

    def mlp(h: torch.Tensor, p: str) -> torch.Tensor:
        return linear(gelu(linear(h, p + "mlp.c_fc")), p + "mlp.c_proj")

    for i in range(c.n_layer):
        p = f"trunk.h.{i}."
        if c.norm == "post":
            x = ln(x + attn(x, p), p + "ln_1")
            x = ln(x + mlp(x, p), p + "ln_2")
        else:
            x = x + attn(ln(x, p + "ln_1"), p)
            x = x + mlp(ln(x, p + "ln_2"), p)
    return ln(x, "trunk.ln_f") if c.norm == "pre" else x


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"activation": "gelu"},
        {"norm": "post", "embed_norm": True, "norm_eps": 1e-12},
        {"bias": False, "norm_eps": 0.5},
    ],
    ids=["pre-ln", "exact gelu", "post-ln (bert)", "no bias, wide eps"],
)
def test_the_trunk_computes_the_written_out_transformer(
    tiny_config: ModelConfig, changes: dict[str, object]
) -> None:
    from dataclasses import replace

    torch.manual_seed(0)
    config = replace(tiny_config, causal=False, n_layer=2, **changes)
    model = MultiTaskModel(config, {"t": 3}).eval()
    for p in model.parameters():  # LayerNorm gains and biases away from 1 and 0 too
        torch.nn.init.normal_(p, std=0.3)
    ids, mask = collate([torch.randint(5, 100, (9,)).numpy(), torch.randint(5, 100, (4,)).numpy()])
    with torch.no_grad():
        got = model.trunk(ids, mask)
        want = reference_trunk(model, ids, mask)
        real = mask[:, :, None]
        torch.testing.assert_close(got * real, want * real, atol=1e-4, rtol=1e-4)
        pooled = model.embed(ids, mask)
        torch.testing.assert_close(pooled[1], want[1, :4].mean(0), atol=1e-4, rtol=1e-4)
        head = model.heads["t"]
        logits = model(ids, mask, "t")[0]
        torch.testing.assert_close(logits, pooled @ head.weight.T + head.bias)
        with pytest.raises(ValueError, match="sequence of 17 tokens > block_size 16"):
            model.trunk(torch.zeros(1, 17, dtype=torch.long))


def test_pooling_modes_take_the_first_token_or_the_masked_maximum() -> None:
    from sentcli.model import pool

    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    hidden[0, 2:] = 1e6  # padding never wins the maximum
    maxed = pool(hidden, mask, "max")
    assert torch.equal(maxed[0], hidden[0, :2].amax(0)) and torch.equal(maxed[1], hidden[1].amax(0))
    assert torch.equal(pool(hidden, mask, "mean"), mean_pool(hidden, mask))
    assert torch.equal(mean_pool(hidden, torch.zeros(2, 4, dtype=torch.bool)), torch.zeros(2, 3))
    # the model pools as its config says
    config = ModelConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=4, pooling="cls")
    model = MultiTaskModel(config, {}).eval()
    ids = torch.randint(5, 50, (2, 4))
    assert torch.equal(model.embed(ids, mask), model.trunk(ids, mask)[:, 0])


def test_key_padding_mask_as_booleans_or_as_an_additive_bias() -> None:
    mask = torch.tensor([[True, True, False]])
    assert key_padding_mask(mask).tolist() == [[[[True, True, False]]]]
    bias = key_padding_mask(mask, additive=True)
    assert bias.dtype == torch.float32 and bias.shape == (1, 1, 1, 3)
    assert bias[0, 0, 0, :2].tolist() == [0.0, 0.0]
    assert bias[0, 0, 0, 2] == torch.finfo(torch.float32).min


def test_gpt2_initialisation_scales(tiny_config: ModelConfig) -> None:
    """N(0, 0.02) matrices, residual projections at 0.02/sqrt(2·n_layer), token embeddings at
    embed_std, zero biases, LayerNorm gains at 1 (measured on a wide model)."""
    import math
    from dataclasses import replace

    torch.manual_seed(0)
    config = replace(tiny_config, n_embd=256, n_head=4, n_layer=4, embed_std=0.5)
    model = MultiTaskModel(config, {"t": 3})
    w = dict(model.named_parameters())
    assert w["trunk.wte.weight"].std().item() == pytest.approx(0.5, rel=0.05)
    assert w["trunk.h.0.mlp.c_fc.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    proj = 0.02 / math.sqrt(2 * 4)
    assert w["trunk.h.3.attn.c_proj.weight"].std().item() == pytest.approx(proj, rel=0.05)
    assert w["trunk.h.1.mlp.c_proj.weight"].std().item() == pytest.approx(proj, rel=0.05)
    assert w["trunk.wpe.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert all(not w[n].any() for n in w if n.endswith("bias"))
    assert torch.equal(w["trunk.h.0.ln_1.weight"], torch.ones(256))
    default = LanguageModel(replace(tiny_config, embed_std=None, n_embd=256, n_head=4))
    assert default.trunk.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_training_flops_per_token_count_each_part() -> None:
    from sentcli.model import training_flops_per_token

    c = ModelConfig(vocab_size=1000, n_layer=2, n_embd=8, n_head=2, block_size=16)
    matmul = 2 * (4 * 8 * 8 + 2 * 8 * 32)  # QKV + output (4·C²), MLP up and down (2·C·4C)
    attention = 12 * 2 * 8 * 10  # QKᵀ and AV over 10 tokens, forward and backward
    assert training_flops_per_token(c, 10, lm_head=False) == 6 * matmul + attention
    assert training_flops_per_token(c, 10, lm_head=True) == 6 * matmul + attention + 6 * 8 * 1000
    c.n_inner = 20
    assert training_flops_per_token(c, 0, lm_head=False) == 6 * 2 * (4 * 64 + 2 * 8 * 20)


def test_masked_lm_scores_only_the_masked_positions(tiny_config: ModelConfig) -> None:
    from dataclasses import replace

    import torch.nn.functional as F

    torch.manual_seed(0)
    model = LanguageModel(replace(tiny_config, causal=False)).eval()
    x = torch.randint(5, tiny_config.vocab_size, (2, 7))
    targets = torch.full_like(x, -100)
    targets[0, 3], targets[1, 0] = 11, 12
    logits, loss = model(x, targets)
    assert logits.shape == (2, tiny_config.vocab_size)  # two positions reach the projection
    full, _ = model(x)
    rows = torch.stack([full[0, 3], full[1, 0]])
    torch.testing.assert_close(logits, rows)
    assert loss is not None
    torch.testing.assert_close(loss, F.cross_entropy(rows, torch.tensor([11, 12])))


def test_a_head_is_linear_or_an_mlp_of_head_hidden() -> None:
    from sentcli.model import make_head

    linear = make_head(8, 3, 0, 0.1)
    assert isinstance(linear, torch.nn.Linear) and linear.weight.shape == (3, 8)
    mlp = make_head(8, 3, 5, 0.2)
    kinds = [type(m).__name__ for m in mlp]
    assert kinds == ["Linear", "GELU", "Dropout", "Linear"]
    assert mlp[0].weight.shape == (5, 8) and mlp[3].weight.shape == (3, 5) and mlp[2].p == 0.2


def test_bf16_training_attention_runs_in_fp32_on_a_cpu_without_amx() -> None:
    """Under CPU bf16 autocast, a training step's attention (inputs that need gradients)
    runs in fp32 exactly where the CPU has no AMX (/proc/cpuinfo), returns bf16 and passes
    gradients; inference and fp32 keep SDPA as it is."""
    from sentcli.model import fp32_training_attention, sdpa

    from helpers import AMX

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 8, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 1, 8, dtype=torch.bool)
    mask[1, ..., 5:] = False
    assert fp32_training_attention(q) is (not AMX)
    assert not fp32_training_attention(q.detach()) and not fp32_training_attention(q.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(q, k, v, mask, False, 0.0)
    assert out.dtype == torch.bfloat16
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), mask)
    assert torch.allclose(out.float(), ref, atol=2e-2)
    if not AMX:  # computed in fp32 to the bit, then rounded once (autocast kept out)
        assert torch.equal(out, ref.to(torch.bfloat16))
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad.float()).all()


def test_bf16_training_attention_traces_without_a_graph_break() -> None:
    """The fp32-attention choice is traceable (the AMX probe is a constant): torch.compile
    takes a bf16 CPU training step's attention whole."""
    from sentcli.model import sdpa

    q, k, v = (torch.randn(2, 2, 8, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 1, 8, dtype=torch.bool)

    def step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return sdpa(q, k, v, mask, False, 0.0)

    torch._dynamo.reset()
    report = torch._dynamo.explain(step)(q, k, v)  # traceable: no graph break
    assert (report.graph_break_count, report.graph_count) == (0, 1), report.break_reasons
