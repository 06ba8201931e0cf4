"""The export parity check: an exported runner's logits and decoded entities against PyTorch's on
the checkpoint's evaluation documents (or built-in sentences), with F1 when there is gold."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from distill.data.document import Document
from distill.data.readers import read_split
from distill.deploy.runners import TorchRunner
from distill.errors import CheckpointError, DistillError
from distill.eval.decode import threshold_spans
from distill.eval.metrics import SpanF1
from distill.model.shapes import example_inputs

log = logging.getLogger("distill")

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


def parity_texts(meta: dict, limit: int) -> tuple[list, str]:
    """Up to ``limit`` evaluation documents of the checkpoint's data (dev, else test, else train)
    when its files are readable here; else the built-in sentences (no gold)."""
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
            candidates.append(Path(__file__).resolve().parents[2] / candidates[0])
        path = next((c for c in candidates if c.is_file()), candidates[0])
        try:
            docs = read_split(data["format"], path, **(data.get("options") or {}))
        except (DistillError, OSError, TypeError) as err:
            log.info("parity: cannot read %s (%s); trying the next split", path, err)
            continue
        return docs[:limit], f"{path} ({split}, first {min(limit, len(docs))} documents)"
    return [Document(t) for t in BUILTIN_TEXTS], "built-in sentences (no gold)"


def as_numpy(logits) -> np.ndarray:
    return logits.detach().float().cpu().numpy() if hasattr(logits, "detach") else np.asarray(logits)


def _spans(predictions) -> set:
    return {(d, p.start, p.end, p.type) for d, doc in enumerate(predictions) for p in doc}


def compact_differing(compact, logits: np.ndarray, threshold: float) -> int:
    """How many windows' span rows differ between a graph's compact output and thresholding its
    dense ``logits`` of the same inputs."""
    return sum(not np.array_equal(a, b) for a, b in zip(threshold_spans(compact, threshold),
                                                          threshold_spans(logits, threshold)))


def check_parity(predictor, runners: dict, docs: list, atol: float, batch_size: int = 16) -> dict:
    """Logits and decoded entities of each runner in ``runners`` against ``predictor``'s own
    (PyTorch) runner on ``docs``; F1 against the gold entities when there are any."""
    texts = [d.text for d in docs]
    windows = predictor.encode(texts)
    names = ["torch", *runners]
    per_doc = {name: {} for name in names}
    stats = {name: {"max_abs_diff": 0.0, "mask_equal": True, "mismatched_spans": 0,
                    "borderline_spans": 0, "spans": 0, "compact_windows_differing": 0}
             for name in runners}
    thr = predictor.threshold
    for batch in predictor.batches(windows, batch_size):
        arrays = predictor.collate(batch)
        ref = as_numpy(predictor.runner(**arrays))
        finite = np.isfinite(ref)
        predictor.collect(ref, batch, per_doc["torch"])
        for name, runner in runners.items():
            out = as_numpy(runner(**arrays))
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
            if getattr(runner, "compact", False):  # what is served: the graph's own span rows
                compact = runner(**arrays, threshold=thr)
                s["compact_windows_differing"] += compact_differing(compact, out, thr)
                out = compact
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
            # windows whose compact output (span_index/span_scores) differs from thresholding
            # the same run's logits (None: the graph has no compact output)
            "compact_windows_differing": (stats[name]["compact_windows_differing"]
                                          if getattr(runners[name], "compact", False) else None),
            "borderline_spans": stats[name]["borderline_spans"],
            "f1": f1(predictions[name]),
        }
    return report


class ParityError(CheckpointError):
    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def synthetic_parity(loaded, runners: dict) -> dict:
    torch_runner = TorchRunner(loaded.model, as_trained=True)
    report = {"documents": 0, "windows": 0}
    for name, runner in runners.items():
        worst, mask_equal, differing = 0.0, True, 0
        for batch, tokens in ((1, 16), (2, 64)):
            ids, attention, content = (t.numpy() for t in example_inputs(
                loaded.model.encoder.config.vocab_size, batch, tokens))
            ref = as_numpy(torch_runner(ids, attention, content))
            out = as_numpy(runner(ids, attention, content))
            finite = np.isfinite(ref)
            mask_equal &= bool(np.array_equal(np.isfinite(out), finite))
            worst = max(worst, float(np.abs(out[finite] - ref[finite]).max()))
            if getattr(runner, "compact", False):
                differing += compact_differing(runner(ids, attention, content, threshold=0.0), out, 0.0)
        report[name] = {"max_abs_diff": worst, "mask_equal": mask_equal,
                        "compact_windows_differing": differing if getattr(runner, "compact", False)
                        else None}
    return report


def print_parity(summary: dict) -> None:
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
        if int8.get("reduce_range_auto"):
            kept = "reduce_range" if int8.get("reduce_range") else "full range"
            tried = "; ".join(f"{k}: max |logit diff| {v['max_abs_diff']:.3g}"
                              + (f", F1 {100 * v['f1']:.2f}" if "f1" in v else "")
                              for k, v in int8["reduce_range_auto"].items())
            lines.append(f"  onnx int8: {kept} weights kept (reduce_range=auto; {tried})")
    print("\n".join(lines), flush=True)
