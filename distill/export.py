"""``python -m distill.export ckpt=<ckpt>``: an ONNX (or Hugging Face-style) folder for serving.

ONNX (``format=onnx``, the default) writes ``model.onnx`` — inputs ``input_ids``,
``attention_mask``, ``content_mask`` with dynamic batch and sequence axes, output ``logits``, the
masked span logits (batch, types, n, n) of :class:`distill.model.SpanNER` — plus, with
``quantize=int8``, ``model.int8.onnx`` (onnxruntime's transformer op fusion, then dynamic int8
quantization of the weights).
Decoding is not in the graph: every runtime decodes with the same NumPy code
(:mod:`distill.decode`). The export is checked before it is kept: ONNX logits must match PyTorch
within ``atol`` and the decoded entities must be identical (``parity.json``); an int8 model's F1
and entity agreement against the fp32 model are reported.

``format=hf`` writes ``model.safetensors`` (the whole SpanNER state dict), ``config.json`` (the
encoder config) and the tokenizer files; :func:`load_hf_folder` loads it back (safetensors and
JSON only, nothing is unpickled).

Both folders hold ``distill.json``: the checkpoint metadata (labels, head, data and decode
settings, encoder config, info) minus the weights, with the tokenizer files listed by name.

``shape=bert-LxH`` exports a randomly initialised model of that shape (no checkpoint needed):
random weights, for latency measurements only (``python -m distill.bench``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from distill.checkpoint import (BEST, LoadedModel, build_from_metadata, load_checkpoint,
                                load_tokenizer_files, resolve, tokenizer_files)
from distill.cli import current_umask, entry, one_line_errors, write_json_atomic
from distill.errors import CheckpointError, ConfigError, DistillError

log = logging.getLogger("distill")

EXPORT_FORMAT = "distill-export/1"
META_FILE = "distill.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
PARITY_FILE = "parity.json"
INPUT_NAMES = ("input_ids", "attention_mask", "content_mask")
OUTPUT_NAME = "logits"
# Metadata keys of a checkpoint that an export folder keeps (the tokenizer goes to files).
META_KEYS = ("encoder_config", "labels", "head", "data", "decode", "info")
PICKLED = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth", "model.ckpt", BEST)
BUILTIN_TEXTS = [
    "EU rejects German call to boycott British lamb.",
    "Peter Blackburn reported from Brussels on Tuesday.",
    "The European Commission said on Thursday it disagreed with German advice to consumers.",
    "Germany's representative to the European Union's veterinary committee Werner Zwingmann "
    "said on Wednesday consumers should buy sheepmeat from countries other than Britain until "
    "the scientific advice was clearer.",
    "Barack Obama visited Paris and met Emmanuel Macron at the Elysee Palace.",
    "Apple Inc. opened a new office in Berlin, Germany.",
    "中国人民大学位于北京。",
    "x",
]


# ----------------------------------------------------------------------------- export folders

def read_export_meta(folder: str | os.PathLike) -> dict:
    """The ``distill.json`` of an export folder, checked; CheckpointError if absent/invalid."""
    folder = Path(folder)
    file = folder / META_FILE
    if not file.is_file():
        raise CheckpointError(f"{folder}: not a distill export folder (no {META_FILE}; export "
                              f"one with: python -m distill.export ckpt=<checkpoint>)")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file}: not valid JSON ({' '.join(str(err).split())})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{file}: not distill export metadata (expected format "
                              f"{EXPORT_FORMAT!r})")
    for key in ("labels", "head", "data", "decode"):
        if key not in meta:
            raise CheckpointError(f"{file}: missing field {key!r}")
    return meta


def read_export_tokenizer(folder: Path, meta: dict):
    """The tokenizer saved beside ``distill.json`` (None for a shape export, which has none)."""
    names = meta.get("tokenizer_files") or []
    if not names:
        return None
    files = {}
    for name in names:
        if not isinstance(name, str) or Path(name).name != name:
            raise CheckpointError(f"{folder / META_FILE}: tokenizer file name {name!r} is not a "
                                  "plain file name")
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: tokenizer file {name} is missing")
        files[name] = path.read_text(encoding="utf-8")
    return load_tokenizer_files(files)


def load_hf_folder(folder: str | os.PathLike) -> LoadedModel:
    """Load a ``format=hf`` export folder: safetensors weights + JSON metadata, nothing pickled."""
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        onnx = [n for n in ONNX_FILES.values() if (folder / n).is_file()]
        if onnx:
            raise CheckpointError(f"{folder}: an ONNX export folder ({', '.join(onnx)}) has no "
                                  f"PyTorch weights: use runtime=onnx (or runtime=onnx-int8), or "
                                  f"export format=hf for PyTorch")
        pickled = [n for n in PICKLED if (folder / n).exists()]
        if pickled:
            raise CheckpointError(f"{folder}: refused to load {pickled[0]} (pickled weights could "
                                  f"run code); only {WEIGHTS_FILE} folders are loaded")
        raise CheckpointError(f"{folder}: no {BEST} (run folder) and no {WEIGHTS_FILE} "
                              "(exported folder)")
    meta = read_export_meta(folder)
    config = folder / CONFIG_FILE
    encoder_config = (config.read_text(encoding="utf-8") if config.is_file()
                      else meta.get("encoder_config"))
    if not encoder_config:
        raise CheckpointError(f"{folder}: no {CONFIG_FILE} (encoder config)")
    try:
        json.loads(encoder_config)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config}: not valid JSON ({err.msg})") from None
    tokenizer = read_export_tokenizer(folder, meta)
    if tokenizer is None:
        raise CheckpointError(f"{folder}: no tokenizer files listed in {META_FILE}")
    full = {k: v for k, v in meta.items() if k != "tokenizer_files"}
    full.update(encoder_config=encoder_config, tokenizer=tokenizer_files(tokenizer))
    try:
        model, _ = build_from_metadata(full)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{folder}: metadata does not describe a model "
                              f"({type(err).__name__}: {err})") from None
    from safetensors.torch import load_model

    try:
        load_model(model, folder / WEIGHTS_FILE, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: weights do not match the architecture "
                              f"({' '.join(str(err).split())[:300]})") from None
    except Exception as err:  # safetensors' own error for corrupt files
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: not a readable safetensors file "
                              f"({' '.join(str(err).split())[:200]})") from None
    model.eval()
    return LoadedModel(model, tokenizer, full, folder)


def export_meta(meta: dict, kind: str, tokenizer_names: list[str], **extra) -> dict:
    """``distill.json``: the checkpoint metadata minus weights and tokenizer contents."""
    out = {"format": EXPORT_FORMAT, "kind": kind}
    out.update({k: meta[k] for k in META_KEYS if k in meta})
    out["tokenizer_files"] = list(tokenizer_names)
    out.update(extra)
    return json.loads(json.dumps(out))


def write_tokenizer(tokenizer, folder: Path) -> list[str]:
    if tokenizer is None:
        return []
    files = tokenizer_files(tokenizer)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return sorted(files)


class _staging:
    """Build an output folder beside its destination; move it into place only on success."""

    def __init__(self, output: Path):
        self.output = output

    def __enter__(self) -> Path:
        out = self.output
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output={out}: exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not (out / META_FILE).is_file():
            raise ConfigError(f"output={out}: exists, is not empty and is not an export folder "
                              "(refusing to overwrite it); choose another output")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        return self.tmp

    def __exit__(self, kind, value, tb):
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        umask = current_umask()
        self.tmp.chmod(0o777 & ~umask)  # mkdtemp/mkstemp make private files
        for file in self.tmp.iterdir():
            file.chmod(0o666 & ~umask)
        old = None
        if self.output.exists():
            old = self.output.with_name(f".{self.output.name}.{os.getpid()}.old")
            os.replace(self.output, old)
        os.replace(self.tmp, self.output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


# ----------------------------------------------------------------------------- ONNX

class LogitsOnly(torch.nn.Module):
    """SpanNER with exactly the three exported inputs and one output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, content_mask):
        return self.model(input_ids, attention_mask, content_mask)


def example_inputs(vocab_size: int, batch: int = 2, tokens: int = 16) -> tuple:
    """Padded example inputs that exercise every mask (dims > 1, so none is specialised)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab_size - 1), vocab_size, (batch, tokens), generator=g)
    attention = torch.ones(batch, tokens, dtype=torch.long)
    content = torch.ones(batch, tokens, dtype=torch.bool)
    content[:, 0] = False
    content[:, -1] = False
    attention[-1, tokens // 2:] = 0
    content[-1, tokens // 2 - 1:] = False
    return ids, attention, content


def export_onnx(model, file: Path, opset: int = 18) -> None:
    """torch.onnx.export (the torch.export-based exporter) with dynamic batch/sequence axes."""
    try:
        import onnxscript  # noqa: F401  (required by the exporter)
    except ImportError:
        raise ConfigError("ONNX export needs the onnxscript package (pip install onnxscript)") from None
    model = model.eval()
    config = model.encoder.config
    args = example_inputs(config.vocab_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=2, max=max(int(getattr(config, "max_position_embeddings", 4096)), 3))
    shapes = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                            "onnxscript", "torch.fx.experimental.symbolic_shapes")]
    levels = [q.level for q in quiet]
    stdout = io.StringIO()
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(stdout), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                LogitsOnly(model).eval(), args, input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME], dynamic_shapes=shapes, opset_version=opset,
                dynamo=True, optimize=True, verbose=False)
            program.save(file, external_data=params > 1_500_000_000)
    except DistillError:
        raise
    except Exception as err:
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(f"ONNX export failed ({type(err).__name__}: {detail})") from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


@contextlib.contextmanager
def _quiet_onnxruntime_tools():
    """Silence the advice onnxruntime's optimizer and quantizer log (shape inference,
    pre-processing): noise for this fixed graph."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def fuse_transformer_ops(source: Path, target: Path, config) -> dict | None:
    """onnxruntime's transformer graph fusion (``onnxruntime.transformers.optimizer``, model type
    bert): LayerNorm after a residual Add becomes SkipLayerNormalization, bias + Gelu becomes
    BiasGelu (onnxruntime ``com.microsoft`` ops). Quantizing the fused graph is a few percent
    faster at batch 1 than quantizing the plain one (docs/results.md). Returns the counts of fused
    ops, or None (with a warning) when the optimizer is unavailable or fails -- the caller then
    quantizes the plain graph."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as err:
        log.warning("onnx: graph fusion skipped (onnxruntime.transformers unavailable: %s)", err)
        return None
    try:
        with _quiet_onnxruntime_tools():
            fused = optimize_model(str(source), model_type="bert", opt_level=0,
                                   num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                                   hidden_size=int(getattr(config, "hidden_size", 0) or 0))
            counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
            fused.save_model_to_file(str(target))
    except Exception as err:  # a graph the optimizer does not understand: quantize it unfused
        log.warning("onnx: graph fusion skipped (%s: %s)", type(err).__name__,
                    " ".join(str(err).split())[:200])
        return None
    return counts


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_onnxruntime_tools():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def fused_int8(source: Path, target: Path, config) -> dict | None:
    """Fuse (:func:`fuse_transformer_ops`) into a temporary file next to ``target``, quantize that
    into ``target``; returns the fused-op counts (None: quantized unfused)."""
    fused_file = target.with_name(target.stem + ".fused.tmp.onnx")
    try:
        counts = fuse_transformer_ops(source, fused_file, config)
        quantize_int8(fused_file if counts is not None else source, target)
    finally:
        fused_file.unlink(missing_ok=True)
    return counts


# ----------------------------------------------------------------------------- parity

def parity_texts(meta: dict, limit: int) -> tuple[list, str]:
    """Up to ``limit`` evaluation documents of the checkpoint's data (dev, else test, else train)
    when its files are readable here; else the built-in sentences (no gold)."""
    from distill.data.document import Document
    from distill.data.readers import read_split

    data = meta.get("data") or {}
    files = data.get("files") or {}
    for split in ("dev", "test", "train"):
        name = files.get(split)
        if not name or not data.get("dir") or not data.get("format"):
            continue
        # data.dir is as the training run saw it: relative to its working directory, which is
        # usually the project root.
        candidates = [Path(str(data["dir"])) / name]
        if not candidates[0].is_absolute():
            candidates.append(Path(__file__).resolve().parents[1] / candidates[0])
        path = next((c for c in candidates if c.is_file()), candidates[0])
        try:
            docs = read_split(data["format"], path, **(data.get("options") or {}))
        except (DistillError, OSError, TypeError) as err:
            log.info("parity: cannot read %s (%s); trying the next split", path, err)
            continue
        return docs[:limit], f"{path} ({split}, first {min(limit, len(docs))} documents)"
    return [Document(t) for t in BUILTIN_TEXTS], "built-in sentences (no gold)"


def _numpy(logits) -> np.ndarray:
    return logits.detach().float().cpu().numpy() if hasattr(logits, "detach") else np.asarray(logits)


def _spans(predictions) -> set:
    return {(d, p.start, p.end, p.type) for d, doc in enumerate(predictions) for p in doc}


def check_parity(predictor, runners: dict, docs: list, atol: float, batch_size: int = 16) -> dict:
    """Logits and decoded entities of each runner in ``runners`` against ``predictor``'s own
    (PyTorch) runner on ``docs``; F1 against the gold entities when there are any."""
    from distill.metrics import SpanF1

    texts = [d.text for d in docs]
    windows = predictor.encode(texts)
    names = ["torch", *runners]
    per_doc = {name: {} for name in names}
    stats = {name: {"max_abs_diff": 0.0, "mask_equal": True, "mismatched_spans": 0,
                    "borderline_spans": 0, "spans": 0} for name in runners}
    thr = predictor.threshold
    for batch in predictor.batches(windows, batch_size):
        arrays = predictor.collate(batch)
        ref = _numpy(predictor.runner(**arrays))
        finite = np.isfinite(ref)
        predictor.collect(ref, batch, per_doc["torch"])
        for name, runner in runners.items():
            out = _numpy(runner(**arrays))
            s = stats[name]
            if out.shape != ref.shape:
                raise CheckpointError(f"{name}: logits of shape {out.shape}, PyTorch {ref.shape}")
            s["mask_equal"] &= bool(np.array_equal(np.isfinite(out), finite))
            both = finite & np.isfinite(out)
            if both.any():
                s["max_abs_diff"] = max(s["max_abs_diff"], float(np.abs(out[both] - ref[both]).max()))
            differ = (out > thr) != (ref > thr)
            s["mismatched_spans"] += int(differ.sum())
            s["borderline_spans"] += int((differ & (np.abs(ref - thr) <= atol)).sum())
            s["spans"] += int((out > thr).sum())
            predictor.collect(out, batch, per_doc[name])
    predictions = {name: predictor.merge(per_doc[name], len(texts)) for name in names}
    labels = set(predictor.labels)
    has_gold = any(d.entities for d in docs)
    gold = [[(e.start, e.end, e.type) for e in d.entities if e.type in labels] for d in docs]

    def f1(preds):
        if not has_gold:
            return None
        metric = SpanF1(predictor.labels)
        metric.update([[(p.start, p.end, p.type) for p in doc] for doc in preds], gold)
        return round(float(metric.compute()["f1"]), 6)

    ref_spans = _spans(predictions["torch"])
    report = {"documents": len(docs), "windows": len(windows), "threshold": thr,
              "entities_torch": len(ref_spans), "f1_torch": f1(predictions["torch"])}
    for name in runners:
        spans = _spans(predictions[name])
        union = ref_spans | spans
        report[name] = {
            "max_abs_diff": stats[name]["max_abs_diff"],
            "mask_equal": stats[name]["mask_equal"],
            "entities": len(spans),
            "entities_identical": spans == ref_spans,
            "agreement": round(len(ref_spans & spans) / len(union), 6) if union else 1.0,
            "mismatched_spans": stats[name]["mismatched_spans"],
            "borderline_spans": stats[name]["borderline_spans"],
            "f1": f1(predictions[name]),
        }
    return report


# ----------------------------------------------------------------------------- the command

def default_output(ckpt: str, fmt: str) -> Path:
    source = resolve(ckpt)
    run_dir = source if source.is_dir() else source.parent
    return run_dir / ("hf" if fmt == "hf" else "export")


def load_source(ckpt: str | None, shape: str | None) -> LoadedModel:
    if bool(ckpt) == bool(shape):
        raise ConfigError("give exactly one of ckpt=<checkpoint> or shape=bert-LxH")
    if shape:
        from distill.bench import shape_model

        model, meta = shape_model(shape)
        return LoadedModel(model, None, meta, Path(shape))
    return load_checkpoint(ckpt)


def export(ckpt: str | None = None, output: str | None = None, format: str = "onnx",
           quantize: str | None = None, shape: str | None = None, parity_docs: int = 200,
           atol: float = 1e-3, opset: int = 18, threads: int | None = None) -> dict:
    """Export a checkpoint (or a random ``shape``); returns the summary written to parity.json."""
    if format not in ("onnx", "hf"):
        raise ConfigError(f"format={format!r}: expected onnx or hf")
    if quantize not in (None, "int8"):
        raise ConfigError(f"quantize={quantize!r}: expected int8 or null")
    if quantize and format != "onnx":
        raise ConfigError("quantize=int8 applies to format=onnx only")
    if shape and format != "onnx":
        raise ConfigError("shape exports (random weights, for latency only) are format=onnx only")
    if bool(ckpt) == bool(shape):
        raise ConfigError("give exactly one of ckpt=<checkpoint> or shape=bert-LxH")
    if shape and output is None:
        raise ConfigError("shape exports need output=<folder>")
    if threads:
        torch.set_num_threads(int(threads))
    output = Path(output) if output is not None else default_output(ckpt, format)
    loaded = load_source(ckpt, shape)
    source = str(loaded.path)
    failed = output.with_name(f"{output.name}.parity-failed.json")
    try:
        with _staging(output) as tmp:
            names = write_tokenizer(loaded.tokenizer, tmp)
            extra = {"source": source}
            if shape:
                extra.update(shape=shape, random_weights=True)
            if format == "hf":
                summary = _export_hf(loaded, tmp, names, extra)
            else:
                summary = _export_onnx(loaded, tmp, names, extra, quantize, parity_docs, atol, opset)
            summary["output"] = str(output)
            write_json_atomic(tmp / PARITY_FILE, summary)
    except ParityError as err:
        write_json_atomic(failed, err.summary)
        raise CheckpointError(f"{err} (nothing written to {output}; details in {failed})") from None
    failed.unlink(missing_ok=True)
    return summary


def _export_hf(loaded: LoadedModel, tmp: Path, names: list[str], extra: dict) -> dict:
    from safetensors.torch import save_model

    save_model(loaded.model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    (tmp / CONFIG_FILE).write_text(loaded.meta["encoder_config"], encoding="utf-8")
    write_json_atomic(tmp / META_FILE, export_meta(loaded.meta, "hf", names, **extra))
    # Round trip: the folder must load back to exactly the same logits.
    if loaded.tokenizer is None:
        return {"format": "hf", "source": extra["source"]}
    back = load_hf_folder(tmp)
    from distill.predict import Predictor

    original = Predictor.from_loaded(loaded)
    arrays = original.collate(original.encode(BUILTIN_TEXTS))
    with torch.inference_mode():
        a = _numpy(original.runner(**arrays))
        b = _numpy(Predictor.from_loaded(back).runner(**arrays))
    if not np.array_equal(a, b):
        raise CheckpointError(f"{tmp}: the exported folder does not reproduce the checkpoint's "
                              "logits")
    log.info("hf: round trip reproduces the checkpoint's logits exactly")
    return {"format": "hf", "source": extra["source"], "round_trip_identical": True}


def _export_onnx(loaded: LoadedModel, tmp: Path, names: list[str], extra: dict,
                 quantize: str | None, parity_docs: int, atol: float, opset: int) -> dict:
    from distill.predict import OnnxRunner, Predictor, TorchRunner

    started = time.perf_counter()
    export_onnx(loaded.model, tmp / ONNX_FILES["onnx"], opset)
    log.info("onnx: exported %s in %.1f s", ONNX_FILES["onnx"], time.perf_counter() - started)
    onnx_meta = {"opset": opset, "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME,
                 "files": [ONNX_FILES["onnx"]]}
    if quantize:
        fused = fused_int8(tmp / ONNX_FILES["onnx"], tmp / ONNX_FILES["onnx-int8"],
                           loaded.model.encoder.config)
        onnx_meta["files"].append(ONNX_FILES["onnx-int8"])
        onnx_meta["int8"] = {"quantization": "dynamic, int8 weights", "fused_ops": fused}
        log.info("onnx: %s (fused before quantizing: %s)", ONNX_FILES["onnx-int8"],
                 ", ".join(f"{n} {op}" for op, n in fused.items()) if fused else "nothing")
    meta = export_meta(loaded.meta, "onnx", names, onnx=onnx_meta, **extra)
    write_json_atomic(tmp / META_FILE, meta)
    runners = {"onnx": OnnxRunner(tmp / ONNX_FILES["onnx"], "onnx")}
    if quantize:
        runners["onnx-int8"] = OnnxRunner(tmp / ONNX_FILES["onnx-int8"], "onnx-int8")
    if loaded.tokenizer is None:  # a shape export: synthetic inputs, logits only
        report = _synthetic_parity(loaded, runners)
        source = "synthetic token ids (random-weights shape model)"
    else:
        predictor = Predictor(TorchRunner(loaded.model), loaded.tokenizer, loaded.meta, loaded.path)
        docs, source = parity_texts(loaded.meta, parity_docs)
        report = check_parity(predictor, runners, docs, atol)
    fp32 = report["onnx"]
    summary = {"format": "onnx", "source": extra["source"], "texts": source, "atol": atol,
               **{k: v for k, v in report.items() if k not in runners}, "onnx": fp32}
    if "onnx-int8" in report:
        int8 = dict(report["onnx-int8"])
        if int8.get("f1") is not None and fp32.get("f1") is not None:
            int8["f1_fp32"] = fp32["f1"]
            int8["f1_diff"] = round(int8["f1"] - fp32["f1"], 6)
        summary["onnx-int8"] = int8
    _print_parity(summary)
    problems = []
    if not fp32["mask_equal"]:
        problems.append("the -inf mask of invalid spans differs")
    if fp32["max_abs_diff"] > atol:
        problems.append(f"max |logit difference| {fp32['max_abs_diff']:.3g} > atol={atol:g}")
    real = fp32.get("mismatched_spans", 0) - fp32.get("borderline_spans", 0)
    if real > 0:
        problems.append(f"{real} spans decode differently")
    if problems:
        raise ParityError(f"ONNX parity check failed: {'; '.join(problems)}", summary)
    return summary


class ParityError(CheckpointError):
    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def _synthetic_parity(loaded: LoadedModel, runners: dict) -> dict:
    from distill.predict import TorchRunner

    torch_runner = TorchRunner(loaded.model)
    report = {"documents": 0, "windows": 0}
    for name, runner in runners.items():
        worst, mask_equal = 0.0, True
        for batch, tokens in ((1, 16), (2, 64)):
            ids, attention, content = (t.numpy() for t in example_inputs(
                loaded.model.encoder.config.vocab_size, batch, tokens))
            ref = _numpy(torch_runner(ids, attention, content))
            out = _numpy(runner(ids, attention, content))
            finite = np.isfinite(ref)
            mask_equal &= bool(np.array_equal(np.isfinite(out), finite))
            worst = max(worst, float(np.abs(out[finite] - ref[finite]).max()))
        report[name] = {"max_abs_diff": worst, "mask_equal": mask_equal}
    return report


def _print_parity(summary: dict) -> None:
    lines = [f"parity on {summary['texts']}:"]
    fp32 = summary["onnx"]
    lines.append(f"  onnx fp32: max |logit diff| {fp32['max_abs_diff']:.3g} (atol {summary['atol']:g})"
                 + (f", entities identical: {fp32['entities_identical']} "
                    f"({fp32['entities']} vs {summary['entities_torch']} in PyTorch)"
                    if "entities" in fp32 else ""))
    if fp32.get("borderline_spans"):
        lines.append(f"  onnx fp32: {fp32['borderline_spans']} spans within atol of the "
                     "threshold decode differently (float rounding, not an export error)")
    int8 = summary.get("onnx-int8")
    if int8:
        text = f"  onnx int8: max |logit diff| {int8['max_abs_diff']:.3g}"
        if "agreement" in int8:
            text += f", entity agreement {100 * int8['agreement']:.2f}% ({int8['entities']} entities)"
        if int8.get("f1_diff") is not None:
            text += (f", F1 {100 * int8['f1']:.2f} vs fp32 {100 * int8['f1_fp32']:.2f} "
                     f"({100 * int8['f1_diff']:+.2f} points)")
        lines.append(text)
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@one_line_errors
def main(cfg: DictConfig) -> None:
    summary = export(ckpt=cfg.get("ckpt"), output=cfg.get("output"), format=cfg.format,
                     quantize=cfg.get("quantize"), shape=cfg.get("shape"),
                     parity_docs=int(cfg.parity_docs), atol=float(cfg.atol), opset=int(cfg.opset),
                     threads=cfg.get("threads"))
    print(f"exported to {summary['output']}", flush=True)


if __name__ == "__main__":
    entry(main)
