"""Batched, streaming inference: sentence vectors and task probabilities, in input order.

Each chunk of input is sorted by token length into batches (little padding), run under
`inference_mode` at the chosen precision and scattered back into input order. The next
chunk is read and tokenized in a worker thread while the model runs on the current one.
`run_inference` is the pipeline embed and predict share: check, load, stream, write.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tokenizers import Tokenizer

from sentcli import checkpoint as ckpt
from sentcli import dist, files, heap
from sentcli.config import InferenceOptions, InferPrecision, RunConfig, choices
from sentcli.data.batching import collate, length_batches
from sentcli.device import autocast, dtype_name, resolve_device, resolve_precision
from sentcli.errors import CheckpointError, ConfigError
from sentcli.events import InferProgress, InferStart, InferWarning, OnEvent
from sentcli.inference import onednn, vectors
from sentcli.inference.inputs import Chunk, TextInput
from sentcli.inference.outputs import (
    CosineWriter,
    LabelWriter,
    MapSink,
    RangeSink,
    Sink,
    check_output,
    vector_sink,
)
from sentcli.inference.quantize import quantize_int8
from sentcli.model import LanguageModel, MultiTaskModel, pool
from sentcli.objectives import labels
from sentcli.tokenizer import encode_counting

MODEL_ENV = "SENTCLI_MODEL"
DEFAULT_MODEL = Path(__file__).parent.parent / "default_model"
"""The multi-task model (topic + sentiment) shipped in the package; `make default-model`."""


BatchFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CPU_FORWARD_TOKENS = 4096
"""On a CPU a forward pads to at most this many tokens, whatever the batch size: larger
activations (128 reviews of 256 tokens make a 100 MB MLP activation) are fresh pages from
the OS on every call, and faulting them in cost more than the MLP's matmul (profiled)."""


@dataclass
class InferenceStats:
    texts: int = 0
    tokens: int = 0
    """Real (non-padding) tokens, [BOS]/[EOS] included."""
    truncated: int = 0
    blank: int = 0
    """Texts that are empty or only whitespace (they get a row all the same)."""
    seconds: float = 0.0


def prepare(model: nn.Module, device: torch.device, precision: str) -> torch.dtype | None:
    """Eval mode on `device` at `precision`; returns the autocast dtype (None: none).

    bf16: the weights themselves become bf16 (no autocast): autocast casts every weight and
    runs LayerNorm and the residual adds in fp32, so each block converts its activations
    back and forth (on 256-token IMDB reviews 31 % of the time went to those copies; plain
    bf16 weights ran 1.2× faster at min cosine 0.99991 to fp32). Pooling and normalisation
    stay fp32. On a CPU with native bf16 the trunk's Linear layers become oneDNN's fused
    linear (`onednn.FusedLinear`: bias and GELU inside the matmul, weights packed once) and,
    without AMX, bidirectional attention runs as batched matmuls
    (`onednn.matmul_attention`). fp16 keeps autocast (fp16 activations can overflow where
    bf16 cannot).
    int8 (CPU): the encoder's Linear layers become `Int8Linear` (dynamic quantisation:
    weights once, activations per token); attention, norms, embeddings and the task heads
    stay fp32."""
    model.eval()
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError("--precision int8 runs on the CPU; use bf16 on a GPU")
        quantize_int8(model.get_submodule("trunk"))
        return None
    model.to(device)
    dtype = resolve_precision(precision, device)
    if dtype == torch.bfloat16:
        model.to(torch.bfloat16)
        if device.type == "cpu" and onednn.available():
            trunk = model.get_submodule("trunk")
            onednn.fuse_linears(trunk, CPU_FORWARD_TOKENS)
            if onednn.matmul_attention_faster():
                onednn.use_matmul_attention(trunk)
        return None
    return dtype


def vector_fn(
    model: MultiTaskModel | LanguageModel, normalize: bool, dims: int | None = None
) -> BatchFn:
    """ids, mask → sentence vectors (the model's pooling, masked mean by default; their
    first `dims` dimensions when given; L2-normalised with `normalize`, after the cut)."""
    trunk = model.trunk
    mode = trunk.config.pooling

    def fn(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        v = pool(trunk(ids, mask).float(), mask, mode)
        v = v if dims is None else v[:, :dims]
        return F.normalize(v, dim=-1) if normalize else v

    return fn


def proba_fn(model: MultiTaskModel, task: str) -> BatchFn:
    """ids, mask → class probabilities of `task`'s head."""
    return lambda ids, mask: torch.softmax(model(ids, mask, task)[0].float(), dim=-1)


@torch.inference_mode()
def apply_batched(
    fn: BatchFn,
    seqs: list[np.ndarray],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """`fn(ids, mask) → [B, D]` over length-sorted batches; row i of the result is seqs[i]."""
    if not seqs:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    out: np.ndarray | None = None
    pin = device.type == "cuda"
    cap = CPU_FORWARD_TOKENS if device.type == "cpu" else None
    for idx in length_batches(lengths, batch_size, max_tokens=cap):
        ids, mask = collate([seqs[i] for i in idx])
        if pin:  # page-locked host memory: the copy overlaps with queued GPU work
            ids, mask = ids.pin_memory(), mask.pin_memory()
        with autocast(device, dtype):
            rows = fn(ids.to(device, non_blocking=pin), mask.to(device, non_blocking=pin))
        values = rows.float().cpu().numpy()
        if out is None:
            out = np.empty((len(seqs), values.shape[1]), dtype=np.float32)
        out[idx] = values  # scatter back: restores the input order
    assert out is not None
    return out


def predict_logits(
    model: MultiTaskModel,
    task: str,
    seqs: list[np.ndarray],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Logits [N, n_labels] of `task`'s head for each token id array."""
    model.eval()
    return apply_batched(lambda i, m: model(i, m, task)[0], seqs, batch_size, device, dtype)


def stream(
    chunks: Iterator[Chunk],
    tokenizer: Tokenizer,
    max_length: int,
    fn: BatchFn,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    stats: InferenceStats,
    stop: threading.Event | None,
    ranks: dist.Dist,
) -> Iterator[tuple[Chunk, np.ndarray]]:
    """(chunk, its rows of `fn`) in input order; the next chunk is read and tokenized in a
    worker thread (tokenizers and torch both release the GIL) while this one runs. `stop`
    (the input's) is set when the caller stops early, so a read of stdin that waits for a
    line gives up instead of holding the worker (and the exit) until the next line.
    Under torchrun every rank reads every chunk and runs its share of it (`dist.sharded`)."""

    def run(share: list[np.ndarray]) -> np.ndarray:
        return apply_batched(fn, share, batch_size, device, dtype)

    def load() -> tuple[Chunk, list[np.ndarray], int] | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        seqs, cut = encode_counting(tokenizer, chunk.texts, max_length)
        return chunk, seqs, cut

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentcli-read") as pool:
        pending: Future[tuple[Chunk, list[np.ndarray], int] | None] = pool.submit(load)
        try:
            while (item := pending.result()) is not None:
                pending = pool.submit(load)
                chunk, seqs, cut = item
                rows = dist.sharded(run, seqs, ranks)
                stats.texts += len(seqs)
                stats.tokens += sum(len(s) for s in seqs)
                stats.truncated += cut
                stats.blank += sum(1 for t in chunk.texts if not t.strip())
                stats.seconds = time.perf_counter() - start
                yield chunk, rows
                heap.release()
        finally:
            if stop is not None:
                stop.set()


@dataclass
class InferenceResult:
    model: Path
    origin: str
    """Where the model came from: --model, $SENTCLI_MODEL or the default model."""
    device: str
    precision: str
    max_length: int
    stats: InferenceStats
    output: Path | None


def check_dims(config: RunConfig, dims: int) -> str | None:
    """--dims against the model: out of range → ConfigError; a width the model was not
    trained for (Matryoshka) → the warning to show; None when it was."""
    width = config.model.n_embd
    if not 1 <= dims <= width:
        raise ConfigError(f"--dims {dims}: the model's vectors are {width} wide; give 1 to {width}")
    trained = {width, *config.train.matryoshka_dims}
    if dims in trained:
        return None
    said = ", ".join(map(str, sorted(trained, reverse=True)))
    return (
        f"the model was not trained for --dims {dims} (its trained widths: {said}); its "
        f"first {dims} dimensions may rank worse than a trained width would"
    )


def resolve_model(model: Path | None) -> tuple[Path, str]:
    """The run to use and where it came from: --model, else $SENTCLI_MODEL, else the default
    model shipped in the package."""
    if model is not None:
        return model, "--model"
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return Path(env), f"${MODEL_ENV}"
    if (DEFAULT_MODEL / ckpt.CONFIG).is_file():
        return DEFAULT_MODEL, "the default model"
    raise ConfigError(
        f"no model: pass --model RUN (a train-encoder or train-mtl run), set {MODEL_ENV}=RUN, "
        "or build the default model with `make default-model`"
    )


MakeFn = Callable[[nn.Module, RunConfig], tuple[BatchFn, Callable[[IO[bytes]], Sink]]]
"""(model, its run config) → (the batch function, a sink factory for the output stream)."""


Quantizer = Callable[[np.ndarray], np.ndarray]
"""float vectors → their codes (int8, or packed bits)."""


def vector_pipeline(
    normalize: bool, output: Path | None, dims: int | None = None, codes: Quantizer | None = None
) -> MakeFn:
    """embed: sentence vectors (their first `dims` dimensions; quantized by `codes`),
    written in the format `output`'s name says."""

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        assert isinstance(net, MultiTaskModel | LanguageModel)

        def sink(f: IO[bytes]) -> Sink:
            plain = vector_sink(f, output)
            return plain if codes is None else MapSink(plain, codes)

        return vector_fn(net, normalize, dims), sink

    return make


def quantizer(
    kind: str | None, ranges: Path | None, model: Path | None, dims: int | None, normalize: bool
) -> Quantizer | None:
    """embed --quantize: int8 (with the calibrated `ranges` of this model and width) or
    binary (signs about the ranges' means, or about 0 without ranges); None: float vectors."""
    if kind is None:
        if ranges is not None:
            raise ConfigError("--ranges is for --quantize int8 or binary; add one or drop it")
        return None
    if kind not in ("int8", "binary"):
        raise ConfigError(f"--quantize {kind}: use int8 or binary")
    if kind == "binary" and ranges is None:
        return vectors.binary
    if ranges is None:
        raise ConfigError(
            "--quantize int8 needs --ranges FILE, the per-dimension ranges of a calibration "
            "set (sentcli calibrate CORPUS -o ranges.json): never the texts being embedded"
        )
    if not normalize:
        raise ConfigError(
            f"--quantize {kind} --ranges codes normalised vectors; drop --no-normalize"
        )
    r = vectors.Ranges.load(ranges)
    path, _ = resolve_model(model)
    width = ckpt.read_config(path).model.n_embd
    r.check(vectors.fingerprint(path), dims or width, f"the ranges in {ranges}")
    if kind == "binary":
        r.check_center(ranges)
        return lambda v: vectors.binary(v, r)
    return lambda v: vectors.int8(v, r)


def range_pipeline(dims: int | None, sink: RangeSink) -> MakeFn:
    """calibrate: each dimension's range over the normalised vectors, nothing written."""

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        assert isinstance(net, MultiTaskModel | LanguageModel)
        return vector_fn(net, normalize=True, dims=dims), lambda f: sink

    return make


def cosine_pipeline(dims: int | None = None) -> MakeFn:
    """similarity: the cosine of each interleaved pair (a1, b1, a2, b2, …), one per line."""

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        assert isinstance(net, MultiTaskModel | LanguageModel)
        return vector_fn(net, normalize=True, dims=dims), CosineWriter

    return make


def label_pipeline(task: str | None, top_k: int, fmt: str) -> MakeFn:
    """predict: the top-k labels of `task` (the model's only task when None)."""

    def make(net: nn.Module, config: RunConfig) -> tuple[BatchFn, Callable[[IO[bytes]], Sink]]:
        names = {t: n for t, n in labels(config.tasks).items() if t in getattr(net, "heads", {})}
        if not isinstance(net, MultiTaskModel) or not names:
            what = (
                "its tasks are similarity tasks: compare its vectors with similarity or search"
                if config.tasks
                else "a pretraining or import-hf run"
            )
            raise ConfigError(
                f"the model has no task heads ({what}); train them with "
                "train-encoder or train-mtl --init, then predict with that run"
            )
        name = task if task is not None else (next(iter(names)) if len(names) == 1 else None)
        if name is None:
            raise ConfigError(f"the model has several tasks; pass --task {' or '.join(names)}")
        if name not in names:
            raise ConfigError(f"the model has no task {name!r}; its tasks: {', '.join(names)}")
        k = min(top_k, len(names[name]))
        return proba_fn(net, name), lambda f: LabelWriter(f, names[name], k, fmt)

    return make


class Source(Protocol):
    total: int | None
    stop: threading.Event

    def chunks(self, size: int) -> Iterator[Chunk]: ...


def run_inference(
    input: str,
    output: Path | None,
    model: Path | None,
    formats: tuple[str, ...],
    options: InferenceOptions,
    make: MakeFn,
    on_event: OnEvent,
    source: Callable[[], Source] | None = None,
) -> InferenceResult:
    """Check everything, load the run, stream the input through `make(net, config)`, write
    atomically (or to `options.stdout`). `source` opens the input (default: `input` as a
    TextInput with the options' columns)."""
    if options.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {options.batch_size})")
    try:
        precision = InferPrecision(options.precision)
    except ValueError:
        raise ConfigError(
            f"--precision {options.precision}: use one of {choices(InferPrecision)}"
        ) from None
    check_output(output, formats, [input])
    texts = (
        source()
        if source
        else TextInput(input, options.text_column, options.id_column, options.stdin)
    )
    path, origin = resolve_model(model)
    try:
        config, net, tok, _ = ckpt.load_run(path)
    except CheckpointError as e:
        raise CheckpointError(f"{origin}: {e}" if origin != "--model" else str(e)) from e
    block = config.model.block_size
    max_length = block if options.max_length is None else options.max_length
    if not 2 <= max_length <= block:
        raise ConfigError(
            f"--max-length {max_length}: the model reads 2 to {block} tokens per text"
        )
    ranks, dev = dist.setup(resolve_device(options.device))  # torchrun: each rank its GPU
    note = check_dims(config, options.dims) if options.dims is not None else None
    dtype = prepare(net, dev, precision)
    fn, make_sink = make(net, config)
    weights = next(net.parameters()).dtype  # bf16 runs with bf16 weights, no autocast
    name = "int8" if precision == InferPrecision.int8 else dtype_name(dtype or weights)
    if not ranks.main:  # the other ranks compute their shares; only the main rank reports
        on_event = None
    if on_event:
        on_event(InferStart(texts.total, str(path), origin, str(dev), name))
        if note is not None:
            on_event(InferWarning(note))
    stats = InferenceStats()
    chunk_size = options.chunk_size or max(1024, 32 * options.batch_size)

    def run(f: IO[bytes] | None) -> None:
        """Stream the input into a sink on `f`; None (a rank other than the main one): only
        compute this rank's shares, nothing is formatted or written."""
        sink = make_sink(f) if f is not None else None
        chunks = texts.chunks(chunk_size)
        batches = stream(
            chunks, tok, max_length, fn, options.batch_size, dev, dtype, stats, texts.stop, ranks
        )
        for chunk, rows in batches:
            if sink is not None:
                sink.write(chunk, rows)
            if on_event:
                on_event(InferProgress(stats.texts))
        if sink is not None:
            sink.close()

    if not ranks.main:
        run(None)
    elif output is None:
        import sys

        run(options.stdout or sys.stdout.buffer)
    else:

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                run(f)

        files.atomic_write(output, write)
    return InferenceResult(path, origin, str(dev), name, max_length, stats, output)
