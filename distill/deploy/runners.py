"""Runners: one forward pass of a model in PyTorch or onnxruntime on NumPy inputs, and loading the
right one for a checkpoint, run folder or export folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from distill.errors import CheckpointError, ConfigError
from distill.eval.decode import SpanRows
from distill.io.export_format import ONNX_FILES, read_export_meta, read_export_tokenizer
from distill.io.load import load_checkpoint, resolve
from distill.model.heads import without_zeroed_heads

log = logging.getLogger("distill")

RUNTIMES = ("torch", "onnx", "onnx-int8")


def resolve_device(device: str | None) -> torch.device:
    """``device=`` of predict, bench and serve: null or "cpu" is the CPU; "cuda" (or "cuda:N")
    needs a CUDA build of torch and a GPU -- else a one-line error, never a silent CPU run."""
    if device in (None, "", "cpu"):
        return torch.device("cpu")
    try:
        resolved = torch.device(str(device))
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r}: expected cpu, cuda or cuda:N") from None
    if resolved.type != "cuda":
        raise ConfigError(f"device={device!r}: expected cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA device here (torch {torch.__version__}, "
                          "torch.cuda.is_available() is False); use device=cpu")
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s)")
    return resolved


class TorchRunner:
    """SpanNER forward in PyTorch on NumPy inputs; returns the (B, C, n, n) logits tensor (on
    ``device``; decoding thresholds it there, so only the spans kept cross to the CPU).

    A width-pruned model runs without its zeroed attention heads (a copy with them removed:
    :func:`distill.model.heads.without_zeroed_heads`, the same function at fewer FLOPs) unless
    ``as_trained`` -- what a parity check against the checkpoint itself uses."""

    runtime = "torch"

    def __init__(self, model, device: str | torch.device | None = None, as_trained: bool = False):
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.removed_heads = []
        if not as_trained:
            model, self.removed_heads = without_zeroed_heads(model)
        self.model = model.eval().to(self.device)

    def __call__(self, input_ids, attention_mask, content_mask, threshold: float | None = None):
        """``threshold`` is for runners that select spans in the graph; here decoding does it."""
        to = lambda a: torch.as_tensor(a).to(self.device, non_blocking=True)
        with torch.inference_mode():
            return self.model(to(input_ids), to(attention_mask), to(content_mask))


class OnnxRunner:
    """An onnxruntime session of an exported model; returns the logits as a NumPy array or, given
    a ``threshold`` and a graph with the compact outputs (``span_index``, ``span_scores``:
    :func:`distill.deploy.export.add_span_outputs`), only the spans above it
    (:class:`distill.eval.decode.SpanRows`), which is all decoding needs.

    The intra-op threads do not spin-wait after a call (onnxruntime's default does): spinning
    keeps the cores busy for a while after each text, which steals them from whatever runs next
    -- the other models in an interleaved benchmark, the rest of a server -- for a gain of a few
    percent in back-to-back calls only."""

    def __init__(self, file: str | os.PathLike, runtime: str = "onnx", threads: int | None = None,
                 device: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"runtime={runtime} needs onnxruntime (pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if resolve_device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(f"device={device} runtime={runtime}: this onnxruntime has no "
                                  "CUDAExecutionProvider (pip install onnxruntime-gpu)")
            index = resolve_device(device).index or 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(file), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise CheckpointError(f"{file}: onnxruntime cannot load it "
                                  f"({' '.join(str(err).split())[:200]})") from None
        self.runtime, self.file = runtime, Path(file)
        self.inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.dense = outputs[0]  # logits (the recipe's encoder graph: its hidden states)
        self.compact = {"span_index", "span_scores"} <= set(outputs)

    def __call__(self, input_ids, attention_mask, content_mask, threshold: float | None = None):
        feed = {"input_ids": np.asarray(input_ids, dtype=np.int64),
                "attention_mask": np.asarray(attention_mask, dtype=np.int64),
                "content_mask": np.asarray(content_mask, dtype=bool)}
        if threshold is None or not self.compact:
            return self.session.run([self.dense], {k: feed[k] for k in self.inputs})[0]
        feed["threshold"] = np.asarray(threshold, dtype=np.float32)  # its default: the export's
        index, scores = self.session.run(["span_index", "span_scores"], feed)
        return SpanRows(index, scores, len(feed["input_ids"]))


def is_onnx_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / ONNX_FILES["onnx"]).is_file()


def load_runner(path: str | os.PathLike, runtime: str = "torch", threads: int | None = None,
                device: str | None = None):
    """(runner, tokenizer or None, metadata, resolved path) for a checkpoint or export folder."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime!r}: expected one of {', '.join(RUNTIMES)}")
    resolve_device(device)  # a bad device= fails before the model loads
    if runtime == "torch":
        loaded = load_checkpoint(path)  # ONNX folders are refused there with a hint
        return TorchRunner(loaded.model, device), loaded.tokenizer, loaded.meta, loaded.path
    folder = resolve(path)
    if not is_onnx_folder(folder):
        run_dir = folder if folder.is_dir() else folder.parent
        hint = (f"use its export: ckpt={run_dir / 'export'}" if is_onnx_folder(run_dir / "export")
                else f"make one with: python -m distill.export ckpt={path}"
                + (" quantize=int8" if runtime == "onnx-int8" else ""))
        raise CheckpointError(f"{path}: runtime={runtime} needs an ONNX export folder (with "
                              f"{ONNX_FILES['onnx']}); {hint}")
    file = folder / ONNX_FILES[runtime]
    if not file.is_file():
        raise CheckpointError(f"{folder}: no {file.name}; export with quantize=int8 for "
                              f"runtime={runtime}")
    meta = read_export_meta(folder)
    if runtime == "onnx-int8":
        warn_full_range_int8(folder, meta)
    return (OnnxRunner(file, runtime, threads, device), read_export_tokenizer(folder, meta), meta,
            folder)


def cpu_lacks_vnni() -> bool:
    """An x86 Linux CPU without VNNI (AVX2/AVX-512 only), read from /proc/cpuinfo: where
    onnxruntime's u8×s8 kernels can saturate with full-range int8 weights. False when unknown."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in
                      Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and not {"avx512_vnni", "avx_vnni"} & set(flags)


def warn_full_range_int8(folder: Path, meta: dict) -> None:
    """An int8 export with full-range weights, checked on a CPU with VNNI (or before the export
    said), run on one without: its parity may not hold here."""
    int8 = (meta.get("onnx") or {}).get("int8") or {}
    if int8.get("reduce_range") is False and not int8.get("checked_without_vnni") and cpu_lacks_vnni():
        log.warning("%s: int8 weights are full range and this CPU has no VNNI, where onnxruntime "
                    "can saturate them (wrong entities); export on this CPU (reduce_range=auto "
                    "checks both) or with reduce_range=true", folder)
