"""Hugging Face BERT both ways: import a local BERT-family checkpoint (and its
sentence-transformers pooling) as sentcli model settings, trunk weights and tokenizer, and
export a BERT-shaped run as a sentence-transformers folder; one name table (`bert_names`)
serves both.

BERT is sentcli's trunk with other options: Post-LN blocks, a LayerNorm on the embeddings,
exact GELU, eps 1e-12. Token-type embeddings are folded into the position embeddings
(single-segment inputs always use type 0), and Q, K, V are fused into one projection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from sentcli import __version__, files
from sentcli import checkpoint as ckpt
from sentcli.config import (
    Activation,
    ModelConfig,
    Norm,
    Pooling,
    RunConfig,
    RunKind,
    TrainConfig,
)
from sentcli.errors import CheckpointError, ConfigError
from sentcli.model import MultiTaskModel
from sentcli.objectives import labels
from sentcli.tokenizer import PAD_ID

SUPPORTED = "BERT-family encoders: model_type bert (BertModel, BertForMaskedLM, BertFor…)"
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
SKIPPED_PREFIXES = ("pooler.", "cls.", "classifier.", "embeddings.position_ids")


@dataclass
class Imported:
    config: ModelConfig
    weights: dict[str, torch.Tensor]
    """Keyed like sentcli's Transformer (the `trunk.` prefix left off)."""
    tokenizer: Tokenizer
    architecture: str
    tensors_read: int
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({e}); fix or re-download it") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return value


def _pooling(folder: Path, notes: list[str]) -> tuple[str, int | None]:
    """The sentence-transformers pooling mode and max_seq_length (mean, None without ST)."""
    if not (folder / "modules.json").is_file():
        notes.append("no modules.json (not a sentence-transformers folder): mean pooling")
        return "mean", None
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    max_len = None
    if (folder / "sentence_bert_config.json").is_file():
        max_len = _json(folder / "sentence_bert_config.json").get("max_seq_length")
    pooling = [m for m in modules if m.get("type", "").endswith("Pooling")]
    if not pooling:
        return "mean", max_len
    cfg = _json(folder / pooling[0]["path"] / "config.json")
    modes = [mode for key, mode in POOLING_KEYS.items() if cfg.get(key)]
    others = [
        k for k, v in cfg.items() if k.startswith("pooling_mode") and v and k not in POOLING_KEYS
    ]
    if others or len(modes) != 1:
        raise CheckpointError(
            f"{folder}: pooling {', '.join(others + modes) or 'none'} is not supported; sentcli "
            "pools by one of mean, cls (first token) or max"
        )
    if modes[0] != "mean":
        notes.append(f"the checkpoint pools by {modes[0]}; sentcli embed will too")
    return modes[0], max_len


def _tokenizer(folder: Path) -> Tokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(
            f"{folder}: no tokenizer.json; save the checkpoint with its fast tokenizer "
            "(tokenizer.save_pretrained) and import again"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception
        raise CheckpointError(f"{path} is not a valid tokenizer.json ({str(e)[:120]})") from e
    # sentcli pads and truncates itself (keeping the final [SEP]); the file's fixed settings
    # (all-MiniLM's pads everything to 128) would change the token counts
    tok.no_truncation()
    tok.no_padding()
    if tok.token_to_id("[PAD]") != 0:
        raise CheckpointError(f"{path}: [PAD] is not id 0; sentcli pads with id 0")
    return tok


def read_checkpoint(folder: Path) -> Imported:
    """Read and check a checkpoint folder; map its tensors onto sentcli's trunk."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; give a Hugging Face checkpoint folder")
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if missing:
        extra = (
            " (pytorch_model.bin is pickle: convert it to safetensors)"
            if (folder / "pytorch_model.bin").is_file()
            else ""
        )
        raise CheckpointError(
            f"{folder} is not a Hugging Face checkpoint folder: missing {', '.join(missing)}"
            f"{extra}; sentcli imports {SUPPORTED}"
        )
    hf = _json(folder / "config.json")
    if "format_version" in hf and "kind" in hf:
        raise CheckpointError(
            f"{folder} is a sentcli run already; use it as it is (--model or --init {folder})"
        )
    architecture = ", ".join(hf.get("architectures") or []) or str(hf.get("model_type"))
    if hf.get("model_type") != "bert":
        raise CheckpointError(
            f"{folder}: unsupported architecture {hf.get('model_type')!r} ({architecture}); "
            f"sentcli imports {SUPPORTED}"
        )
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS or hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"{folder}: hidden_act {act!r} / position_embedding_type "
            f"{hf.get('position_embedding_type')!r} not supported; sentcli imports GELU "
            "activations with absolute positions"
        )
    notes: list[str] = []
    pooling, max_len = _pooling(folder, notes)
    positions = int(hf["max_position_embeddings"])
    block = min(positions, int(max_len)) if max_len else positions
    tok = _tokenizer(folder)
    try:
        config = ModelConfig(
            vocab_size=int(hf["vocab_size"]),
            block_size=block,
            n_layer=int(hf["num_hidden_layers"]),
            n_head=int(hf["num_attention_heads"]),
            n_embd=int(hf["hidden_size"]),
            dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attn_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            causal=False,
            activation=Activation(ACTIVATIONS[act]),
            norm=Norm.post,
            embed_norm=True,
            norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            n_inner=int(hf["intermediate_size"]),
            pooling=Pooling(pooling),
        )
    except KeyError as e:
        raise CheckpointError(f"{folder}/config.json has no {e.args[0]!r}") from e
    if tok.get_vocab_size() > config.vocab_size:
        raise CheckpointError(
            f"{folder}: tokenizer.json has {tok.get_vocab_size()} tokens, the model only "
            f"{config.vocab_size}"
        )
    try:
        tensors = load_file(str(folder / "model.safetensors"))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{folder}/model.safetensors is corrupt ({e})") from e
    weights, skipped = _map(tensors, config, block)
    return Imported(config, weights, tok, architecture, len(tensors), skipped, notes)


EMB = "embeddings."


def bert_names(n_layer: int) -> dict[str, str]:
    """Each trunk tensor that a Hugging Face BertModel holds one to one: sentcli's name →
    BERT's. Import reads it one way, the sentence-transformers export the other; beside it
    only Q, K, V (`qkv_names`) and the position and token-type embeddings differ."""
    out = {
        "wte.weight": f"{EMB}word_embeddings.weight",
        "ln_e.weight": f"{EMB}LayerNorm.weight",
        "ln_e.bias": f"{EMB}LayerNorm.bias",
    }
    for i in range(n_layer):
        ours, theirs = f"h.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            out[f"{ours}attn.c_proj.{kind}"] = f"{theirs}attention.output.dense.{kind}"
            out[f"{ours}ln_1.{kind}"] = f"{theirs}attention.output.LayerNorm.{kind}"
            out[f"{ours}mlp.c_fc.{kind}"] = f"{theirs}intermediate.dense.{kind}"
            out[f"{ours}mlp.c_proj.{kind}"] = f"{theirs}output.dense.{kind}"
            out[f"{ours}ln_2.{kind}"] = f"{theirs}output.LayerNorm.{kind}"
    return out


def qkv_names(n_layer: int) -> dict[str, list[str]]:
    """sentcli's fused QKV projection → BERT's query, key and value (stacked in that order)."""
    return {
        f"h.{i}.attn.c_attn.{kind}": [
            f"encoder.layer.{i}.attention.self.{p}.{kind}" for p in ("query", "key", "value")
        ]
        for i in range(n_layer)
        for kind in ("weight", "bias")
    }


def _map(
    tensors: dict[str, torch.Tensor], config: ModelConfig, block: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    # BertFor* checkpoints prefix the encoder with "bert."
    t = {k.removeprefix("bert."): v for k, v in tensors.items()}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in t:
            raise CheckpointError(f"model.safetensors has no tensor {name!r}; not a BERT encoder")
        used.add(name)
        return t[name].float()

    positions = take(f"{EMB}position_embeddings.weight")[:block]
    if f"{EMB}token_type_embeddings.weight" in t:  # every input is segment 0: fold it in
        positions = positions + take(f"{EMB}token_type_embeddings.weight")[0]
    out = {"wpe.weight": positions}
    out |= {ours: take(theirs) for ours, theirs in bert_names(config.n_layer).items()}
    out |= {
        ours: torch.cat([take(n) for n in theirs], dim=0)
        for ours, theirs in qkv_names(config.n_layer).items()
    }
    extra = [k for k in t if k not in used]
    unknown = [k for k in extra if not k.startswith(SKIPPED_PREFIXES)]
    if unknown:
        raise CheckpointError(
            f"model.safetensors has tensors sentcli cannot map ({', '.join(unknown[:3])}…): "
            f"a different architecture or more layers than config.json says; sentcli imports "
            f"{SUPPORTED}"
        )
    return out, sorted(extra)


def import_checkpoint(folder: Path) -> tuple[RunConfig, MultiTaskModel, Tokenizer, dict[str, Any]]:
    """A checkpoint folder → the run config, the model (trunk only, no heads), the tokenizer
    and what was imported (shapes checked against the config first)."""
    imp = read_checkpoint(folder)
    model = MultiTaskModel(imp.config, {})
    for name, tensor in model.trunk.state_dict().items():
        got = imp.weights[name].shape
        if got != tensor.shape:
            raise CheckpointError(
                f"{folder}: tensor for {name} has shape {tuple(got)}, config.json implies "
                f"{tuple(tensor.shape)}; the weights and config.json do not belong together"
            )
    model.trunk.load_state_dict(imp.weights, strict=True)
    info: dict[str, Any] = {
        "from": str(folder),
        "architecture": imp.architecture,
        "tensors_read": imp.tensors_read,
        "tensors_written": len(imp.weights),
        "parameters": sum(v.numel() for v in imp.weights.values()),
        "skipped": imp.skipped,
        "pooling": imp.config.pooling,
        "max_length": imp.config.block_size,
    }
    run = RunConfig(RunKind.encoder, imp.config, TrainConfig(), imported=info)
    return run, model, imp.tokenizer, {**info, "notes": imp.notes}


def bert_shaped(config: RunConfig) -> bool:
    """sentence-transformers (Hugging Face BERT) can hold the run: Post-LN blocks, a
    LayerNorm on the embeddings, biases, bidirectional attention, exact or tanh GELU."""
    m = config.model
    return m.norm == Norm.post and m.embed_norm and m.bias and not m.causal


def _bert_weights(model: MultiTaskModel, n_layer: int) -> dict[str, torch.Tensor]:
    """sentcli's trunk under Hugging Face BertModel names (`_map` backwards: Q, K, V split
    again; the token-type embedding is zero, since import folded type 0 into the position
    embeddings)."""
    t = {k: v.detach().float().contiguous() for k, v in model.trunk.state_dict().items()}
    c = t["wte.weight"].shape[1]
    out = {theirs: t[ours] for ours, theirs in bert_names(n_layer).items()}
    out[f"{EMB}position_embeddings.weight"] = t["wpe.weight"]
    out[f"{EMB}token_type_embeddings.weight"] = torch.zeros(2, c)
    for ours, theirs in qkv_names(n_layer).items():
        for name, x in zip(theirs, t[ours].split(c, dim=0), strict=True):
            out[name] = x.contiguous()
    # BertModel's [CLS] pooler: sentence-transformers never uses it; zeros, so that loading
    # reports no missing weights (import does not keep the original)
    out["pooler.dense.weight"] = torch.zeros(c, c)
    out["pooler.dense.bias"] = torch.zeros(c)
    return out


def _special(tok: Tokenizer, *names: str) -> str | None:
    return next((n for n in names if tok.token_to_id(n) is not None), None)


def export_sentence_transformers(
    run_dir: Path, out_dir: Path, normalize: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """A folder `SentenceTransformer(out_dir)` loads with no custom code: a Hugging Face
    BERT model and tokenizer, modules.json, the pooling (and Normalize) modules."""
    ckpt.check_export_dir(out_dir, overwrite, run_dir)
    config, model, tok, _ = ckpt.load_run(run_dir)
    if not isinstance(model, MultiTaskModel) or not bert_shaped(config):
        raise ConfigError(
            f"{run_dir} is sentcli's own Pre-LN transformer, which sentence-transformers "
            "cannot load without custom code; export it with --format onnx"
        )
    m = config.model
    bert = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": m.vocab_size,
        "hidden_size": m.n_embd,
        "num_hidden_layers": m.n_layer,
        "num_attention_heads": m.n_head,
        "intermediate_size": m.n_inner or 4 * m.n_embd,
        "hidden_act": "gelu" if m.activation == "gelu" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": m.dropout,
        "attention_probs_dropout_prob": m.attn_dropout,
        "max_position_embeddings": m.block_size,
        "type_vocab_size": 2,
        "layer_norm_eps": m.norm_eps,
        "pad_token_id": PAD_ID,
        "position_embedding_type": "absolute",
    }
    specials = {
        "pad_token": _special(tok, "[PAD]"),
        "unk_token": _special(tok, "[UNK]"),
        "cls_token": _special(tok, "[CLS]", "[BOS]"),
        "sep_token": _special(tok, "[SEP]", "[EOS]"),
        "mask_token": _special(tok, "[MASK]"),
    }
    pooling = {
        "word_embedding_dimension": m.n_embd,
        **{f"pooling_mode_{k}": str(m.pooling) == v for k, v in _POOLING.items()},
    }
    stack = ["Transformer", "Pooling", *(["Normalize"] if normalize else [])]
    modules = [
        {
            "idx": i, "name": str(i), "path": f"{i}_{kind}" if i else "",
            "type": f"sentence_transformers.models.{kind}",
        }
        for i, kind in enumerate(stack)
    ]  # fmt: skip
    with files.staged(out_dir) as tmp:
        save_file(
            _bert_weights(model, m.n_layer),
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        files.write_json(tmp / "config.json", bert)
        tok.save(str(tmp / "tokenizer.json"))
        files.write_json(
            tmp / "tokenizer_config.json",
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": m.block_size,
                **{k: v for k, v in specials.items() if v is not None},
            },
        )
        files.write_json(tmp / "modules.json", modules)
        files.write_json(
            tmp / "sentence_bert_config.json",
            {"max_seq_length": m.block_size, "do_lower_case": False},
        )
        files.write_json(
            tmp / "config_sentence_transformers.json", {"similarity_fn_name": "cosine"}
        )
        (tmp / "1_Pooling").mkdir()
        files.write_json(tmp / "1_Pooling" / "config.json", pooling)
        if normalize:
            (tmp / "2_Normalize").mkdir()
        meta = {
            "format": "sentence-transformers",
            "sentcli_version": __version__,
            "run": str(run_dir.resolve()),
            "max_length": m.block_size,
            "pooling": str(m.pooling),
            "normalize": normalize,
            "labels": labels(config.tasks),
            "note": "the task heads are not part of a sentence-transformers model",
        }
        files.write_json(tmp / ckpt.EXPORT_META, meta)
    return meta


_POOLING = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}
