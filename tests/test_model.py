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
