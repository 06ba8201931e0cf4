"""CPU latency of checkpoints, export folders and ``bert-LxH`` shapes, interleaved in one process
(``python -m distill.bench models=[...]``).

For every model given, in one process and interleaved (each repetition runs the models
round-robin, starting from a different one, so that drift from other load hits all alike), after
warm-up: p50/p95 latency per text at batch 1 for each of ``lengths`` tokens, and throughput
(texts/s) at batch ``batch`` and ``batch_tokens`` tokens. A run is end to end after
tokenization: forward pass plus decoding (:func:`distill.eval.decode.threshold_spans`,
:func:`~distill.eval.decode.window_predictions`, :func:`~distill.eval.decode.merge_windows`); decoding is
also timed alone (``decode_ms`` per text, ``decode_share`` of the run; an ONNX export with the
compact output selects the spans above the threshold in its graph, so only those reach decoding). With a reference recipe
among the models (``recipe:bert-4x768``, see :func:`load_recipe_model`) every row has
``vs_recipe``: its p50 over the recipe's p50 of the same case. ``plot=<png>`` draws p50 latency
against length for every model.

Models: a checkpoint file, run folder or ``format=hf`` folder (PyTorch); an ONNX export folder
(onnxruntime, fp32 and, when present, int8 as separate rows); or a shape ``bert-LxH`` — a
randomly initialised BERT of L layers and hidden size H (H/64 heads, intermediate 4H, vocabulary
30522) with a GlobalPointer head (4 types, head size 64): latency does not depend on weights.

Inputs are synthetic token ids of exactly the requested length (content all but the first and
last token). Random weights put about half of all spans above 0, which no trained model does, so
random-weights models decode with a threshold calibrated to let ~1 span per 4 tokens through.

:func:`load_bench_model` and :func:`measure` are the API (used by :mod:`distill.report`'s comparison).
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from distill.deploy.runners import (
    TorchRunner,
    is_onnx_folder,
    load_runner,
    resolve_device,
)
from distill.errors import ConfigError
from distill.eval.decode import merge_windows, threshold_spans, window_predictions
from distill.io.atomic import write_json_atomic
from distill.io.export_format import ONNX_FILES
from distill.model.shapes import SHAPE_VOCAB, parse_shape, shape_model

log = logging.getLogger("distill")

RANDOM_SPANS_PER_TOKEN = 0.25
RECIPE = "recipe:"
FIELDS = ("model", "runtime", "batch", "tokens", "p50_ms", "p95_ms", "per_second",
          "decode_ms", "decode_share", "vs_recipe")


# ----------------------------------------------------------------------------- models

class BenchModel:
    """One model to time: ``run(batch, tokens)`` is one forward pass and decode of synthetic
    inputs of that shape."""

    def __init__(self, name: str, runtime: str, runner, labels: list[str], vocab_size: int,
                 threshold: float = 0.0, flat: bool = False, random_weights: bool = False,
                 cls_id: int = 2, sep_id: int = 3, decode: bool = True):
        self.name, self.runtime, self.runner = name, runtime, runner
        self.decode = decode  # False: an encoder without a head (the reference recipe)
        self.labels, self.vocab_size = list(labels), int(vocab_size)
        self.threshold, self.flat, self.random_weights = float(threshold), bool(flat), random_weights
        self.cls_id, self.sep_id = cls_id, sep_id
        self._inputs: dict[tuple[int, int], dict] = {}
        self._thresholds: dict[tuple[int, int], float] = {}

    def __repr__(self) -> str:
        return f"BenchModel({self.name!r}, runtime={self.runtime!r})"

    def inputs(self, batch: int, tokens: int) -> dict:
        key = (batch, tokens)
        if key not in self._inputs:
            if tokens < 3:
                raise ConfigError(f"tokens={tokens}: at least 3 ([CLS] x [SEP])")
            rng = np.random.default_rng(tokens)
            low = min(1000, self.vocab_size // 2)
            ids = rng.integers(low, self.vocab_size, (batch, tokens), dtype=np.int64)
            ids[:, 0], ids[:, -1] = self.cls_id, self.sep_id
            content = np.ones((batch, tokens), dtype=bool)
            content[:, 0] = content[:, -1] = False
            self._inputs[key] = {
                "arrays": {"input_ids": ids, "attention_mask": np.ones_like(ids),
                           "content_mask": content},
                "offsets": [(0, 0)] + [(5 * k, 5 * k + 4) for k in range(tokens - 2)] + [(0, 0)],
            }
        return self._inputs[key]

    def prepare(self, batch: int, tokens: int) -> None:
        """Build the inputs (and, for random weights, calibrate the threshold) before timing."""
        inputs = self.inputs(batch, tokens)
        key = (batch, tokens)
        if key in self._thresholds:
            return
        threshold = self.threshold
        if self.random_weights and self.decode:
            logits = self.runner(**inputs["arrays"])
            logits = logits.float().cpu().numpy() if hasattr(logits, "numpy") else np.asarray(logits)
            finite = logits[np.isfinite(logits)]
            k = min(len(finite), max(1, int(RANDOM_SPANS_PER_TOKEN * tokens)) * batch)
            threshold = float(np.partition(finite, len(finite) - k)[len(finite) - k]) - 1e-6
        self._thresholds[key] = threshold

    def _decode(self, logits, batch: int, tokens: int) -> None:
        if not self.decode:
            return
        offsets = self._inputs[(batch, tokens)]["offsets"]
        for rows in threshold_spans(logits, self._thresholds[(batch, tokens)]):
            merge_windows([window_predictions(rows, offsets, self.labels)], self.flat)

    def forward(self, batch: int, tokens: int):
        """The runner's output for decoding: the spans above the threshold when the graph selects
        them itself (compact output), else the logits."""
        threshold = self._thresholds[(batch, tokens)] if self.decode else None
        return self.runner(**self._inputs[(batch, tokens)]["arrays"], threshold=threshold)

    def run(self, batch: int, tokens: int) -> None:
        self.prepare(batch, tokens)
        self._decode(self.forward(batch, tokens), batch, tokens)

    def timed(self, batch: int, tokens: int) -> tuple[float, float]:
        """(seconds end to end, seconds decoding) of one run."""
        start = time.perf_counter()
        logits = self.forward(batch, tokens)
        if getattr(logits, "is_cuda", False):  # the forward pass ends when the device is done
            torch.cuda.synchronize(logits.device)
        middle = time.perf_counter()
        self._decode(logits, batch, tokens)
        end = time.perf_counter()
        return end - start, end - middle


def load_recipe_model(spec: str) -> BenchModel:
    """``recipe:<shape | checkpoint | run dir>``: the standard hand-made onnxruntime recipe for
    that model's encoder (:func:`distill.deploy.export.export_encoder_recipe`: the plain encoder,
    TorchScript exporter, ``quantize_dynamic`` QInt8, no head, no decoding) -- the reference the
    project's own int8 graphs are measured against (``vs_recipe``)."""
    import tempfile

    from distill.deploy.export import export_encoder_recipe
    from distill.deploy.runners import OnnxRunner
    from distill.io.load import load_checkpoint

    source = spec.removeprefix(RECIPE)
    if parse_shape(source) is not None and not Path(source).exists():
        model, _ = shape_model(source)
        tokenizer = None
    else:
        loaded = load_checkpoint(source)
        model, tokenizer = loaded.model, loaded.tokenizer
    with tempfile.TemporaryDirectory() as tmp:  # the session holds the graph once loaded
        runner = OnnxRunner(export_encoder_recipe(model.encoder, Path(tmp)), "onnx-int8",
                            torch.get_num_threads())
    special = {}
    if tokenizer is not None and tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None:
        special = {"cls_id": tokenizer.cls_token_id, "sep_id": tokenizer.sep_token_id}
    return BenchModel(spec, "recipe-int8", runner, model.labels, model.encoder.config.vocab_size,
                      decode=False, **special)


def load_bench_model(spec: str, runtime: str | None = None, device: str | None = None) -> BenchModel:
    """A model to time: checkpoint file, run folder, export folder, HF folder, shape
    ``bert-LxH`` or ``recipe:<shape or checkpoint>`` (:func:`load_recipe_model`); ``runtime``
    None is the natural one (torch, or onnx for an export folder)."""
    spec = str(spec)
    if spec.startswith(RECIPE):
        if runtime not in (None, "onnx-int8") or resolve_device(device).type != "cpu":
            raise ConfigError(f"{spec}: the reference recipe runs in onnxruntime int8 on the CPU "
                              "(leave runtime and device unset)")
        return load_recipe_model(spec)
    if parse_shape(spec) is not None and not Path(spec).exists():
        if runtime not in (None, "torch"):
            raise ConfigError(f"{spec}: a shape runs in PyTorch; for runtime={runtime} export it "
                              f"first: python -m distill.export shape={spec} output=<folder>")
        model, meta = shape_model(spec)
        return BenchModel(spec, "torch", TorchRunner(model, device), meta["labels"], SHAPE_VOCAB,
                          random_weights=True)
    if runtime is None:
        runtime = "onnx" if is_onnx_folder(spec) else "torch"
    runner, tokenizer, meta, _ = load_runner(spec, runtime, torch.get_num_threads(), device)
    config = json.loads(meta["encoder_config"]) if meta.get("encoder_config") else {}
    vocab = int(config.get("vocab_size") or (len(tokenizer) if tokenizer is not None else SHAPE_VOCAB))
    special = {}
    if tokenizer is not None and tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None:
        special = {"cls_id": tokenizer.cls_token_id, "sep_id": tokenizer.sep_token_id}
    decode, data = meta.get("decode") or {}, meta.get("data") or {}
    random_weights = bool(meta.get("random_weights") or (meta.get("info") or {}).get("random_weights"))
    return BenchModel(spec, runtime, runner, meta["labels"], vocab,
                      threshold=decode.get("threshold", 0.0),
                      flat=decode.get("flat", data.get("flat", False)),
                      random_weights=random_weights, **special)


def load_bench_models(spec: str, runtime: str | None = None,
                      device: str | None = None) -> list[BenchModel]:
    """Like :func:`load_bench_model`; an export folder without ``runtime`` gives its fp32 and
    (when present) int8 models."""
    if runtime is None and is_onnx_folder(spec):
        runtimes = [r for r, f in ONNX_FILES.items() if (Path(spec) / f).is_file()]
        return [load_bench_model(spec, r, device) for r in runtimes]
    return [load_bench_model(spec, runtime, device)]


# ----------------------------------------------------------------------------- timing

def measure(models: list[BenchModel], cases: list[tuple[int, int]], warmup: int = 3,
            repeats: int = 20, progress: bool = False) -> list[dict]:
    """Time every model on every (batch, tokens) case, interleaved; rows are case-major, in
    ``models`` order within a case."""
    from tqdm import tqdm

    if repeats < 1:
        raise ConfigError(f"repeats={repeats}: must be at least 1")
    models = list(models)
    cases = [(int(b), int(t)) for b, t in cases]
    rows: list[dict] = []
    total = len(cases) * len(models) * (warmup + repeats)
    with tqdm(total=total, desc="bench", unit="run", file=sys.stderr, disable=not progress,
              dynamic_ncols=True, leave=False) as bar:
        for batch, tokens in cases:
            for m in models:
                m.prepare(batch, tokens)
            for _ in range(warmup):
                for m in models:
                    m.run(batch, tokens)
                    bar.update()
            runs = [[] for _ in models]
            gc.collect()
            gc.disable()
            try:
                for r in range(repeats):
                    for k in range(len(models)):
                        i = (r + k) % len(models)  # round-robin, a different model first each time
                        runs[i].append(models[i].timed(batch, tokens))
                        bar.update()
            finally:
                gc.enable()
            case = [summarize(m, batch, tokens, timings) for m, timings in zip(models, runs)]
            recipe = next((r["p50_ms"] for r in case if r["runtime"] == "recipe-int8"), None)
            for r in case:  # p50 over the (first) reference recipe's p50 of the same case
                r["vs_recipe"] = round(r["p50_ms"] / recipe, 4) if recipe else None
            rows.extend(case)
    return rows


def summarize(model: BenchModel, batch: int, tokens: int, timings: list[tuple[float, float]]) -> dict:
    total = np.array([t for t, _ in timings])
    decode = np.array([d for _, d in timings])
    per_text_ms = 1000 * total / batch
    return {
        "model": model.name, "runtime": model.runtime, "batch": batch, "tokens": tokens,
        "p50_ms": round(float(np.percentile(per_text_ms, 50)), 4),
        "p95_ms": round(float(np.percentile(per_text_ms, 95)), 4),
        "per_second": round(float(batch / np.median(total)), 2),
        "decode_ms": round(float(np.median(1000 * decode / batch)), 4),
        "decode_share": round(float(np.median(decode / total)), 4),
    }


def format_table(rows: list[dict]) -> str:
    """A plain-text table; speed-up is p50 relative to the first model of the same case."""
    header = ["model", "runtime", "batch", "tokens", "p50 ms", "p95 ms", "texts/s", "decode %",
              "speed-up"] + (["vs recipe"] if any(r.get("vs_recipe") for r in rows) else [])
    base: dict[tuple[int, int], float] = {}
    lines = []
    for r in rows:
        key = (r["batch"], r["tokens"])
        base.setdefault(key, r["p50_ms"])
        lines.append([str(r["model"]), r["runtime"], str(r["batch"]), str(r["tokens"]),
                      f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['per_second']:.1f}",
                      f"{100 * r['decode_share']:.1f}", f"{base[key] / r['p50_ms']:.2f}x"]
                     + ([f"{r['vs_recipe']:.2f}" if r.get("vs_recipe") else "-"]
                        if len(header) > 9 else []))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def bench_cases(lengths, batch: int, batch_tokens: int) -> list[tuple[int, int]]:
    cases = [(1, int(n)) for n in lengths]
    if (int(batch), int(batch_tokens)) not in cases:
        cases.append((int(batch), int(batch_tokens)))
    return cases


def _as_list(value) -> list:
    if isinstance(value, (ListConfig, list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def run(cfg: DictConfig) -> dict:
    specs = _as_list(cfg.models)
    if not specs:
        raise ConfigError("models: give at least one, e.g. models=[bert-12x768,bert-4x768]")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    threads = torch.get_num_threads()
    print(f"torch threads: {threads} (onnxruntime intra-op threads: {threads})", flush=True)
    resolve_device(cfg.get("device"))
    models = [m for spec in specs for m in load_bench_models(spec, cfg.get("runtime"), cfg.get("device"))]
    lengths = OmegaConf.to_container(cfg.lengths) if isinstance(cfg.lengths, ListConfig) else [cfg.lengths]
    cases = bench_cases(lengths, cfg.batch, cfg.batch_tokens)
    rows = measure(models, cases, int(cfg.warmup), int(cfg.repeats), bool(cfg.progress))
    print(format_table(rows), flush=True)
    report = {"threads": threads, "results": rows}
    write_json_atomic(cfg.output, report)
    log.info("wrote %s", cfg.output)
    if cfg.get("plot") and len({r["tokens"] for r in rows if r["batch"] == 1}) > 1:
        from distill.report.plots import plot_latency_vs_length

        plot_latency_vs_length(rows, Path(cfg.plot))
        log.info("wrote %s", cfg.plot)
    return report
