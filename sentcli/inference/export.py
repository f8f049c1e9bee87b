"""Take a run out of sentcli: an ONNX graph for onnxruntime (every run that embeds), or a
sentence-transformers folder (BERT-shaped runs: imported checkpoints and their fine-tunes).

Both keep sentcli's tokenization: the run's tokenizer.json, [BOS]/[CLS] … [EOS]/[SEP], cut
to the model's block size keeping the final special token, padded with id 0 (what a plain
`tokenizers` Tokenizer does with enable_truncation(max_length) and enable_padding())."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer

from sentcli import __version__, files
from sentcli import checkpoint as ckpt
from sentcli.config import Norm, RunConfig
from sentcli.data.batching import collate
from sentcli.errors import ConfigError
from sentcli.model import LanguageModel, MultiTaskModel, pool
from sentcli.objectives import labels
from sentcli.tokenizer import PAD_ID, encode

META = "sentcli_export.json"
"""What an export folder holds and how to feed it (inputs, outputs, max length, pooling,
normalisation, label names)."""


class Graph(nn.Module):
    """What the ONNX graph computes: [B, T] int64 ids and mask → the sentence vector [B, C]
    (L2-normalised with `normalize`, as `sentcli embed` writes it) and, per task head, its
    class probabilities [B, K] (from the pooled vector, as `sentcli predict`)."""

    def __init__(
        self, model: MultiTaskModel | LanguageModel, heads: list[str], normalize: bool
    ) -> None:
        super().__init__()
        self.trunk = model.trunk
        own = model.heads if isinstance(model, MultiTaskModel) else nn.ModuleDict()
        self.heads = nn.ModuleDict({t: own[t] for t in heads})
        self.normalize = normalize

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        t, mask = self.trunk, attention_mask.bool()
        pos = torch.arange(input_ids.size(1), device=input_ids.device)
        x = t.drop(t.ln_e(t.wte(input_ids) + t.wpe(pos)))  # [B, T, C], as Transformer.forward
        # An additive mask, not SDPA's boolean one: exported, the boolean mask becomes
        # IsNaN/Where passes over every [B, heads, T, T] score matrix (they guard rows with
        # no key; none lacks one here): all-MiniLM-L6-v2 on 256-token IMDB reviews in
        # onnxruntime went from 14 to 20.5 texts/s without them.
        bias = (~mask[:, None, None, :]).float() * torch.finfo(torch.float32).min  # [B,1,1,T]
        for block in t.h:
            x = block(x, bias, t.config.causal)
        v = pool(t.ln_f(x).float(), mask, t.config.pooling)  # [B, C]
        vector = F.normalize(v, dim=-1) if self.normalize else v
        return (vector, *(torch.softmax(head(v).float(), dim=-1) for head in self.heads.values()))


def _example(tok: Tokenizer, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of two texts of different lengths: the traced graph must mask."""
    ids, mask = collate(encode(tok, ["a short text", "a longer text, to pad the other"], block))
    return ids, mask.long()  # int64 in, as onnxruntime's users feed it


def _need(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"export needs {module}: pip install 'sentcli[{extra}]'")


def label_names(config: RunConfig) -> dict[str, list[str]]:
    return labels(config.tasks)


EXPORT_NAMES = {
    META, "model.onnx", "model_int8.onnx", "tokenizer.json",  # onnx
    "model.safetensors", "config.json", "tokenizer_config.json", "modules.json",
    "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling",
    "2_Normalize",  # sentence-transformers
}  # fmt: skip
"""What an export writes: --overwrite replaces a folder holding nothing else."""


def check_output(out_dir: Path, overwrite: bool, run_dir: Path) -> None:
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
    if out_dir.resolve() in (Path("/"), Path.home().resolve(), Path.cwd().resolve()):
        raise ConfigError(
            f"-o {out_dir} ({out_dir.resolve()}) is a folder an export would replace whole; "
            "give -o a new folder"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / META).is_file():
            raise ConfigError(
                f"-o {out_dir} holds files that are not a sentcli export; give a new folder"
            )
        if not overwrite:
            raise ConfigError(f"-o {out_dir} holds an export; pass --overwrite to replace it")
        ckpt.check_replaceable(out_dir, [run_dir], EXPORT_NAMES, "a sentcli export")
    files.check_writable(out_dir, files.existing_folder(out_dir))


@contextlib.contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside `out_dir` to write the export into; when the block ends
    without error it replaces `out_dir` in one rename (an old export is removed), else it
    is deleted."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~files.umask())  # mkdtemp makes it 0700: give the usual mode
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and the quantizer's progress notes and warnings (logging and
    warnings) are not the user's business."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _quantize(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantization (int8 weights, activations scaled per batch),
    after its recommended pre-processing (shape inference and graph optimisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = source.with_name("prepared.onnx")
    with _quiet():
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        # int8 weights per output channel, for the matmuls only: min cosine to fp32 0.986
        # on all-MiniLM-L6-v2 and IMDB reviews, against 0.883 with onnxruntime's defaults
        # (one scale per tensor, the embedding lookups quantized too)
        quantize_dynamic(
            prepared, target, weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul"],
        )  # fmt: skip
    prepared.unlink()


def export_onnx(
    run_dir: Path,
    out_dir: Path,
    normalize: bool = True,
    quantize: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write `model.onnx` (and with `quantize` `model_int8.onnx`, onnxruntime's dynamic int8
    quantization of it), the run's `tokenizer.json` and `sentcli_export.json`."""
    check_output(out_dir, overwrite, run_dir)
    _need("onnxscript", "onnx")
    if quantize:
        _need("onnxruntime", "onnx")
    config, model, tok, _ = ckpt.load_run(run_dir)
    assert isinstance(model, MultiTaskModel | LanguageModel)
    model.eval()
    labels = label_names(config)  # classification heads (not distillation projections)
    graph = Graph(model, list(labels), normalize)
    outputs = ["sentence_embedding", *(f"probabilities_{t}" for t in labels)]
    block = config.model.block_size
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=block)
    with _staged(out_dir) as tmp:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                graph,
                _example(tok, block),
                input_names=["input_ids", "attention_mask"],
                output_names=outputs,
                dynamic_shapes={
                    "input_ids": {0: batch, 1: seq},
                    "attention_mask": {0: batch, 1: seq},
                },
                dynamo=True,
                verbose=False,
            )
            assert program is not None
            program.save(str(tmp / "model.onnx"))
        files = ["model.onnx"]
        if quantize:
            _quantize(tmp / "model.onnx", tmp / "model_int8.onnx")
            files.append("model_int8.onnx")
        tok.save(str(tmp / "tokenizer.json"))
        meta = {
            "format": "onnx",
            "sentcli_version": __version__,
            "run": str(run_dir.resolve()),
            "files": files,
            "inputs": {
                "input_ids": "int64 [batch, sequence]",
                "attention_mask": "int64 [batch, sequence]",
            },
            "outputs": {
                "sentence_embedding": f"float32 [batch, {config.model.n_embd}]",
                **{f"probabilities_{t}": f"float32 [batch, {len(n)}]" for t, n in labels.items()},
            },
            "max_length": block,
            "pad_id": PAD_ID,
            "pooling": str(config.model.pooling),
            "normalize": normalize,
            "labels": labels,
        }
        _write_json(tmp / META, meta)
    return meta


def bert_shaped(config: RunConfig) -> bool:
    """sentence-transformers (Hugging Face BERT) can hold the run: Post-LN blocks, a
    LayerNorm on the embeddings, biases, bidirectional attention, exact or tanh GELU."""
    m = config.model
    return m.norm == Norm.post and m.embed_norm and m.bias and not m.causal


def _bert_weights(model: MultiTaskModel, n_layer: int) -> dict[str, torch.Tensor]:
    """sentcli's trunk under Hugging Face BertModel names (the inverse of sentcli.hf's map:
    Q, K, V split again; the token-type embedding is zero, since import folded type 0 into
    the position embeddings)."""
    t = {k: v.detach().float().contiguous() for k, v in model.trunk.state_dict().items()}
    c = t["wte.weight"].shape[1]
    e = "embeddings."
    out = {
        e + "word_embeddings.weight": t["wte.weight"],
        e + "position_embeddings.weight": t["wpe.weight"],
        e + "token_type_embeddings.weight": torch.zeros(2, c),
        e + "LayerNorm.weight": t["ln_e.weight"],
        e + "LayerNorm.bias": t["ln_e.bias"],
    }
    for i in range(n_layer):
        src, dst = f"h.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = t[f"{src}attn.c_attn.{kind}"].split(c, dim=0)
            for name, x in zip(("query", "key", "value"), (q, k, v), strict=True):
                out[f"{dst}attention.self.{name}.{kind}"] = x.contiguous()
            out[f"{dst}attention.output.dense.{kind}"] = t[f"{src}attn.c_proj.{kind}"]
            out[f"{dst}attention.output.LayerNorm.{kind}"] = t[f"{src}ln_1.{kind}"]
            out[f"{dst}intermediate.dense.{kind}"] = t[f"{src}mlp.c_fc.{kind}"]
            out[f"{dst}output.dense.{kind}"] = t[f"{src}mlp.c_proj.{kind}"]
            out[f"{dst}output.LayerNorm.{kind}"] = t[f"{src}ln_2.{kind}"]
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
    check_output(out_dir, overwrite, run_dir)
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
    with _staged(out_dir) as tmp:
        save_file(
            _bert_weights(model, m.n_layer),
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        _write_json(tmp / "config.json", bert)
        tok.save(str(tmp / "tokenizer.json"))
        _write_json(
            tmp / "tokenizer_config.json",
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": m.block_size,
                **{k: v for k, v in specials.items() if v is not None},
            },
        )
        _write_json(tmp / "modules.json", modules)
        _write_json(
            tmp / "sentence_bert_config.json",
            {"max_seq_length": m.block_size, "do_lower_case": False},
        )
        _write_json(tmp / "config_sentence_transformers.json", {"similarity_fn_name": "cosine"})
        (tmp / "1_Pooling").mkdir()
        _write_json(tmp / "1_Pooling" / "config.json", pooling)
        if normalize:
            (tmp / "2_Normalize").mkdir()
        meta = {
            "format": "sentence-transformers",
            "sentcli_version": __version__,
            "run": str(run_dir.resolve()),
            "max_length": m.block_size,
            "pooling": str(m.pooling),
            "normalize": normalize,
            "labels": label_names(config),
            "note": "the task heads are not part of a sentence-transformers model",
        }
        _write_json(tmp / META, meta)
    return meta


_POOLING = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
