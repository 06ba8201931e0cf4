"""Exporting a checkpoint to a serving folder: ONNX (fp32; int8 after graph fusion) or Hugging Face-style.

ONNX (``format=onnx``, the default) writes ``model.onnx`` — inputs ``input_ids``,
``attention_mask``, ``content_mask`` with dynamic batch and sequence axes, output ``logits``, the
masked span logits (batch, types, n, n) of :class:`distill.model.span_ner.SpanNER` — plus, with
``quantize=int8``, ``model.int8.onnx`` (onnxruntime's transformer op fusion, then dynamic int8
quantization of the weights). ``attention=fused`` exports BERT encoders with onnxruntime's fused Attention op
(:func:`export_onnx_fused_attention`). ``optimize`` says which graphs get the offline fusion: ``int8`` (the
default: the graph that is quantized), ``ort`` (``model.onnx`` too), ``none``. ``distill.json``
records the fused ops onnxruntime runs (``fused_ops``: op name -> count, of the int8 file when
there is one; per file under ``onnx.runtime_fused_ops``) and each file's op counts (``onnx.graph_ops``).
:func:`export_encoder_recipe` is the hand-made reference the benchmark compares against: the
plain encoder, TorchScript exporter, ``quantize_dynamic`` QInt8.
Both files also output the compact form decoding reads (:func:`add_span_outputs`: the spans
above an input ``threshold``, K rows instead of the dense matrix); the rest of decoding (offsets,
merging windows) is the same NumPy code for every runtime (:mod:`distill.eval.decode`). The export is checked before it is kept: ONNX logits must match PyTorch
within ``atol`` and the decoded entities must be identical (``parity.json``); an int8 model's F1
and entity agreement against the fp32 model are reported.

``format=hf`` writes ``model.safetensors`` (the whole SpanNER state dict), ``config.json`` (the
encoder config) and the tokenizer files; :func:`distill.io.export_format.load_hf_folder` loads it back (safetensors and
JSON only, nothing is unpickled).

Both folders hold ``distill.json``: the checkpoint metadata (labels, head, data and decode
settings, encoder config, info) minus the weights, with the tokenizer files listed by name.

``shape=bert-LxH`` exports a randomly initialised model of that shape (no checkpoint needed):
random weights, for latency measurements only (``python -m distill.bench``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill.deploy.parity import (BUILTIN_TEXTS, ParityError, as_numpy, check_parity, parity_texts,
                                   print_parity, synthetic_parity)
from distill.deploy.predict import Predictor
from distill.deploy.runners import OnnxRunner, TorchRunner, cpu_lacks_vnni
from distill.errors import CheckpointError, ConfigError, DistillError
from distill.io.atomic import staged_folder, write_json_atomic
from distill.io.checkpoint import LoadedModel
from distill.io.export_format import (CONFIG_FILE, META_FILE, ONNX_FILES, PARITY_FILE, WEIGHTS_FILE,
                                      export_meta, load_hf_folder, write_tokenizer)
from distill.io.load import load_checkpoint, resolve
from distill.model.heads import block_parts, without_zeroed_heads
from distill.model.shapes import example_inputs, shape_model
from distill.model.span_ner import encoder_layers, span_mask

log = logging.getLogger("distill")

INPUT_NAMES = ("input_ids", "attention_mask", "content_mask")
OUTPUT_NAME = "logits"
ATTENTION = ("plain", "fused")  # attention as ONNX ops | onnxruntime's fused Attention (BERT)
OPTIMIZE = ("int8", "ort", "none")  # offline fusion of: the graph quantized | both graphs | neither


# ----------------------------------------------------------------------------- ONNX

class LogitsOnly(torch.nn.Module):
    """SpanNER with exactly the three exported inputs and one output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, content_mask):
        return self.model(input_ids, attention_mask, content_mask)


@contextlib.contextmanager
def eager_attention(encoder):
    """The encoder with its eager attention while exported (then as it was). transformers 5's
    SDPA path builds its mask with ``Where``/``IsNaN`` over (B, 1, n, n) in the graph -- a quarter
    of onnxruntime's time at 512 tokens; the eager path exports as MatMul, Add and Softmax
    (measured in docs/results.md). Encoders without the switch export as they are."""
    before = getattr(encoder.config, "_attn_implementation", None)
    switch = getattr(encoder, "set_attn_implementation", None)
    changed = False
    if before not in (None, "eager") and switch is not None:
        try:
            switch("eager")
            changed = True
        except (ValueError, ImportError, NotImplementedError, AttributeError):
            pass
    try:
        yield encoder
    finally:
        if changed:
            switch(before)


def export_onnx(model, file: Path, opset: int = 18) -> None:
    """torch.onnx.export (the torch.export-based exporter) with dynamic batch/sequence axes, the
    encoder in eager attention (:func:`eager_attention`)."""
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
    with _quiet_torch_export("ONNX export", "torch.export", "torch._dynamo", "onnxscript",
                             "torch.fx.experimental.symbolic_shapes"), eager_attention(model.encoder):
        program = torch.onnx.export(
            LogitsOnly(model).eval(), args, input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME], dynamic_shapes=shapes, opset_version=opset,
            dynamo=True, optimize=True, verbose=False)
        program.save(file, external_data=params > 1_500_000_000)


@contextlib.contextmanager
def _quiet_torch_export(what: str, *loggers: str):
    """Around a torch.onnx.export call: its chatter (stdout, warnings, the ``torch.onnx`` logger
    and ``loggers`` below ERROR) silenced, no autograd, and any failure that is not already a
    :class:`DistillError` turned into a one-line :class:`CheckpointError` naming ``what``."""
    quiet = [logging.getLogger(n) for n in ("torch.onnx", *loggers)]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except DistillError:
        raise
    except Exception as err:
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(f"{what} failed ({type(err).__name__}: {detail})") from None
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
        from onnxruntime.transformers.fusion_options import FusionOptions

        options = FusionOptions("bert")
        # EmbedLayerNormalization computes BERT's positions (0..n-1); MPNet's and RoBERTa's start
        # after the padding id, so fusing theirs is wrong (a tiny MPNet int8: logits 1.7 off, 0.02 unfused)
        options.enable_embed_layer_norm = getattr(config, "model_type", "bert") == "bert"
        with _quiet_onnxruntime_tools():
            num_heads, hidden_size = _attention_sizes(config)
            fused = optimize_model(str(source), model_type="bert", opt_level=0, num_heads=num_heads,
                                   hidden_size=hidden_size, optimization_options=options)
            counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
            fused.save_model_to_file(str(target))
    except Exception as err:  # a graph the optimizer does not understand: quantize it unfused
        log.warning("onnx: graph fusion skipped (%s: %s)", type(err).__name__,
                    " ".join(str(err).split())[:200])
        return None
    return counts


def _attention_sizes(config) -> tuple[int, int]:
    """(num_heads, hidden_size) of the attention for onnxruntime's fusion. Heads removed
    (``pruned_heads``, :func:`distill.model.heads.without_zeroed_heads`): the same count left in
    every layer gives narrower Q/K/V; unequal layers give (0, 0), the optimizer reads the graph."""
    num_heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden_size = int(getattr(config, "hidden_size", 0) or 0)
    pruned = getattr(config, "pruned_heads", None)
    if not pruned:
        return num_heads, hidden_size
    left = {num_heads - len(pruned.get(k, [])) for k in range(int(config.num_hidden_layers))}
    if len(left) > 1:
        return 0, 0
    heads = left.pop()
    return heads, heads * (hidden_size // num_heads)


def op_counts(file: Path) -> dict[str, int]:
    """Op type -> number of nodes in the main graph of an ONNX file, most frequent first."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(file), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def runtime_fused_ops(file: Path) -> dict[str, int]:
    """Op name -> count of the fused (``com.microsoft``) ops in the graph onnxruntime actually
    runs for ``file`` on the CPU: the offline fusion plus what onnxruntime fuses itself at load
    (the graph it optimises is saved to a temporary file and counted)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def fuse_in_place(file: Path, config) -> dict | None:
    """:func:`fuse_transformer_ops` of ``file`` into itself (through a temporary file)."""
    fused_file = file.with_name(file.stem + ".fused.tmp.onnx")
    try:
        counts = fuse_transformer_ops(file, fused_file, config)
        if counts is not None:
            fused_file.replace(file)
    finally:
        fused_file.unlink(missing_ok=True)
    return counts


class _EncoderOnly(torch.nn.Module):
    """A plain encoder (no head): (input_ids, attention_mask) -> last hidden state."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_encoder_torchscript(encoder, file: Path, opset: int, what: str) -> None:
    """The plain encoder ((input_ids, attention_mask) -> ``hidden``, dynamic batch/sequence axes)
    through the TorchScript exporter (``dynamo=False``); a failure is a :class:`CheckpointError`
    naming ``what``."""
    ids, attention, _ = example_inputs(encoder.config.vocab_size)
    axes = {name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask", "hidden")}
    with _quiet_torch_export(what, "torch.jit"):
        torch.onnx.export(_EncoderOnly(encoder.eval()).eval(), (ids, attention), str(file),
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)


def export_encoder_recipe(encoder, folder: Path, opset: int = 17) -> Path:
    """The standard hand-made recipe, as a reference for latency: the plain encoder exported with
    the TorchScript exporter (:func:`export_encoder_torchscript`), then ``quantize_dynamic``
    QInt8. Returns the int8 file (``folder/recipe.int8.onnx``)."""
    folder = Path(folder)
    fp32, int8 = folder / "recipe.onnx", folder / "recipe.int8.onnx"
    export_encoder_torchscript(encoder, fp32, opset, "recipe export")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_onnxruntime_tools():  # the standard call: one scale per weight matrix
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    fp32.unlink(missing_ok=True)
    return int8


def save_onnx(model, file: Path) -> None:
    """Save a graph edited here; its weights in a side file when the protobuf would pass 2 GB."""
    import onnx

    big = model.ByteSize() > 1_500_000_000
    onnx.save(model, str(file), save_as_external_data=big, location=file.name + ".data" if big else None)


def add_span_outputs(file: Path, threshold: float = 0.0) -> None:
    """Give an exported graph its compact output: ``span_index`` (K, 4) int64 rows (window,
    type, start, end) of the spans whose logit exceeds the input ``threshold`` (a scalar, by
    default the checkpoint's decoding threshold), and ``span_scores`` (K,) their logits -- what
    decoding needs, K rows instead of B·C·n² floats. ``logits`` stays an output (parity, users
    of the dense matrix); onnxruntime computes only the outputs a call asks for."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(file))
    graph = model.graph
    if any(o.name == "span_index" for o in graph.output):
        return
    graph.initializer.append(helper.make_tensor("threshold", TensorProto.FLOAT, [], [float(threshold)]))
    graph.input.append(helper.make_tensor_value_info("threshold", TensorProto.FLOAT, []))
    graph.node.extend([
        helper.make_node("Greater", [OUTPUT_NAME, "threshold"], ["span_keep"], name="span_keep"),
        helper.make_node("NonZero", ["span_keep"], ["span_nonzero"], name="span_nonzero"),
        helper.make_node("Transpose", ["span_nonzero"], ["span_index"], perm=[1, 0], name="span_index"),
        helper.make_node("GatherND", [OUTPUT_NAME, "span_index"], ["span_scores"], name="span_scores"),
    ])
    graph.output.extend([helper.make_tensor_value_info("span_index", TensorProto.INT64, ["spans", 4]),
                         helper.make_tensor_value_info("span_scores", TensorProto.FLOAT, ["spans"])])
    save_onnx(model, file)


@dataclass(frozen=True)
class Int8Options:
    """How ``model.int8.onnx`` is quantized: dynamic int8, weights one scale per output channel
    (one scale per matrix lost 0.96 dev F1 on a CoNLL MiniLM teacher, per channel 0.35;
    docs/results.md), activations quantized at run time.

    ``reduce_range``: 7-bit weights, for x86 CPUs without VNNI (AVX2 only), where onnxruntime's
    u8×s8 kernels can saturate the pair sums of full-range weights (a tiny random MPNet's int8
    logits 0.33 off there, 0.03 with it; on a MiniLM teacher it cost 0.11 F1 more on the same
    CPU; on trained 12- and 4-layer MPNet students full range gave no entity at all). The export's
    ``reduce_range=auto`` (the default) quantizes both ways and keeps the one its parity check
    scores best (:func:`choose_int8`).
    ``embeddings``: quantize the embedding tables too (one scale per table): the file shrinks
    (that teacher: 59 → 23 MB) and F1 drops (−0.18 → −0.35); they stay fp32 by default, as fast."""

    reduce_range: bool = False
    embeddings: bool = False

    def describe(self) -> dict:
        return {"quantization": "dynamic, int8 weights (QInt8), per output channel, "
                                + ("reduce_range (7-bit weights)" if self.reduce_range else "full range")
                                + (", embeddings int8" if self.embeddings else ", embeddings fp32"),
                "reduce_range": self.reduce_range, "embeddings": "int8" if self.embeddings else "fp32"}


def int8_candidates(reduce_range, embeddings: bool = False) -> list[Int8Options]:
    """The int8 variants an export quantizes: ``reduce_range`` auto (both, full range first) or
    true/false (that one)."""
    if reduce_range is None or str(reduce_range).lower() == "auto":
        return [Int8Options(False, embeddings), Int8Options(True, embeddings)]
    if isinstance(reduce_range, bool) or str(reduce_range).lower() in ("true", "false"):
        return [Int8Options(str(reduce_range).lower() == "true", embeddings)]
    raise ConfigError(f"reduce_range={reduce_range!r}: expected auto, true or false")


def int8_label(options: Int8Options) -> str:
    return "reduce_range" if options.reduce_range else "full range"


def choose_int8(report: dict, names: list[str]) -> str:
    """The int8 candidate (runner name in ``report``) to keep: the highest F1 on the parity
    documents, then the smallest max |logit difference| from PyTorch (all a shape export or a
    text without gold has), then the first (full range)."""
    def rank(item):
        k, name = item
        f1 = report[name].get("f1")
        return (-(f1 if f1 is not None else 0.0), report[name]["max_abs_diff"], k)
    return min(enumerate(names), key=rank)[1]


def quantize_int8(source: Path, target: Path, options: Int8Options = Int8Options(),
                  attention: bool = False) -> None:
    """Dynamic int8 quantization of ``source`` into ``target`` (:class:`Int8Options`); with
    ``attention``, the fused Attention ops too (their weights; onnxruntime's QAttention)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = ["MatMul"] + ["Attention"] * attention + ["Gather"] * options.embeddings
    # com.microsoft ops defeat ONNX shape inference: their outputs are float
    extra = {"DefaultTensorType": TensorProto.FLOAT} if attention else {}
    with _quiet_onnxruntime_tools():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=options.reduce_range, op_types_to_quantize=ops,
                         extra_options=extra)


class _HeadOnly(torch.nn.Module):
    """SpanNER's head and span mask: (hidden states, content_mask) -> masked logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, hidden, content_mask):
        return self.model.head(hidden).masked_fill(~span_mask(content_mask), float("-inf"))


def export_onnx_fused_attention(model, file: Path, opset: int = 18) -> dict:
    """``model.onnx`` with onnxruntime's fused transformer ops, attention included: the encoder
    through the TorchScript exporter (eager attention; a graph onnxruntime's optimizer fuses
    whole: Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu), the head
    through the torch.export-based one (its graph does not survive the other exporter), joined at
    the hidden states. BERT encoders with the same head count in every layer only. Returns the
    fused-op counts. 1-8 % faster than the plain export (docs/results.md)."""
    import onnx

    config = model.encoder.config
    if getattr(config, "model_type", None) != "bert":
        raise ConfigError(f"attention=fused: BERT encoders only (this one is "
                          f"{getattr(config, 'model_type', '?')}); use attention=plain")
    heads = {block_parts(layer)["att"].num_attention_heads for layer in encoder_layers(model.encoder)}
    if len(heads) > 1:
        raise ConfigError(f"attention=fused: the layers have different head counts ({sorted(heads)}: "
                          "width-pruned); use attention=plain")
    model = model.eval()
    ids, attention, content = example_inputs(config.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        encoder_file, fused_file, head_file = (Path(tmp) / n for n in ("enc.onnx", "fused.onnx", "head.onnx"))
        with eager_attention(model.encoder):
            export_encoder_torchscript(model.encoder, encoder_file, opset, "ONNX export (encoder)")
        try:
            with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings(), \
                    eager_attention(model.encoder):
                warnings.simplefilter("ignore")
                hidden = _EncoderOnly(model.encoder).eval()(ids, attention)
                dims = {0: torch.export.Dim("batch", min=1, max=4096),
                        1: torch.export.Dim("sequence", min=2, max=4096)}
                program = torch.onnx.export(_HeadOnly(model).eval(), (hidden, content),
                                            input_names=["hidden", INPUT_NAMES[2]],
                                            output_names=[OUTPUT_NAME],
                                            dynamic_shapes={"hidden": dims, "content_mask": dims},
                                            opset_version=opset, dynamo=True, optimize=True)
                program.save(str(head_file))
        except Exception as err:
            detail = " ".join(str(err).split())[:300]
            raise CheckpointError(f"ONNX export (head) failed ({type(err).__name__}: {detail})") from None
        counts = fuse_transformer_ops(encoder_file, fused_file, config)
        if not counts or not counts.get("Attention"):
            raise CheckpointError(f"attention=fused: onnxruntime fused no attention in this encoder "
                                  f"({counts}); use attention=plain")
        joined, head = onnx.load(str(fused_file)), onnx.load(str(head_file))
    head = onnx.compose.add_prefix(head, "head/", rename_inputs=False, rename_outputs=False)
    graph = joined.graph
    graph.node.extend(head.graph.node)
    graph.initializer.extend(head.graph.initializer)
    graph.input.extend(i for i in head.graph.input if i.name == INPUT_NAMES[2])
    del graph.output[:]
    graph.output.extend(head.graph.output)
    versions = {("" if o.domain == "ai.onnx" else o.domain): o.version
                for o in [*joined.opset_import, *head.opset_import]}
    del joined.opset_import[:]
    joined.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    joined.ir_version = max(joined.ir_version, head.ir_version)
    save_onnx(joined, file)
    return counts


def fused_int8(source: Path, targets: dict, config) -> dict | None:
    """Fuse (:func:`fuse_transformer_ops`) into a temporary file next to the targets, quantize
    that into each target (path -> :class:`Int8Options`); returns the fused-op counts (None:
    quantized unfused)."""
    first = next(iter(targets))
    fused_file = first.with_name(first.stem + ".fused.tmp.onnx")
    try:
        counts = fuse_transformer_ops(source, fused_file, config)
        for target, options in targets.items():
            quantize_int8(fused_file if counts is not None else source, target, options)
    finally:
        fused_file.unlink(missing_ok=True)
    return counts


# ----------------------------------------------------------------------------- the command

def default_output(ckpt: str, fmt: str) -> Path:
    source = resolve(ckpt)
    run_dir = source if source.is_dir() else source.parent
    return run_dir / ("hf" if fmt == "hf" else "export")


def load_source(ckpt: str | None, shape: str | None) -> LoadedModel:
    if bool(ckpt) == bool(shape):
        raise ConfigError("give exactly one of ckpt=<checkpoint> or shape=bert-LxH")
    if shape:
        model, meta = shape_model(shape)
        return LoadedModel(model, None, meta, Path(shape))
    return load_checkpoint(ckpt)


def export(ckpt: str | None = None, output: str | None = None, format: str = "onnx",
           quantize: str | None = None, shape: str | None = None, parity_docs: int = 200,
           atol: float = 1e-3, opset: int = 18, threads: int | None = None,
           optimize: str = "int8", reduce_range: bool | str = "auto", int8_embeddings: bool = False,
           attention: str = "plain") -> dict:
    """Export a checkpoint (or a random ``shape``); returns the summary written to parity.json."""
    if format not in ("onnx", "hf"):
        raise ConfigError(f"format={format!r}: expected onnx or hf")
    if quantize not in (None, "int8"):
        raise ConfigError(f"quantize={quantize!r}: expected int8 or null")
    if optimize not in OPTIMIZE:
        raise ConfigError(f"optimize={optimize!r}: expected one of {', '.join(OPTIMIZE)}")
    if quantize and format != "onnx":
        raise ConfigError("quantize=int8 applies to format=onnx only")
    if shape and format != "onnx":
        raise ConfigError("shape exports (random weights, for latency only) are format=onnx only")
    if bool(ckpt) == bool(shape):
        raise ConfigError("give exactly one of ckpt=<checkpoint> or shape=bert-LxH")
    candidates = int8_candidates(reduce_range, bool(int8_embeddings))
    if shape and output is None:
        raise ConfigError("shape exports need output=<folder>")
    if threads:
        torch.set_num_threads(int(threads))
    output = Path(output) if output is not None else default_output(ckpt, format)
    loaded = load_source(ckpt, shape)
    source = str(loaded.path)
    failed = output.with_name(f"{output.name}.parity-failed.json")
    try:
        with staged_folder(output, META_FILE, "export folder") as tmp:
            names = write_tokenizer(loaded.tokenizer, tmp)
            extra = {"source": source}
            if shape:
                extra.update(shape=shape, random_weights=True)
            if format == "hf":
                summary = _export_hf(loaded, tmp, names, extra)
            else:
                summary = _export_onnx(loaded, tmp, names, extra, quantize, parity_docs, atol, opset,
                                       optimize, candidates, attention)
            summary["output"] = str(output)
            write_json_atomic(tmp / PARITY_FILE, summary)
    except ParityError as err:
        write_json_atomic(failed, err.summary)
        raise CheckpointError(f"{err} (nothing written to {output}; details in {failed})") from None
    failed.unlink(missing_ok=True)
    return summary


def _int8_scores(report: dict, f1_torch) -> dict:
    """What choose_int8 compared, for distill.json and parity.json (print_parity shows it)."""
    scores = {"max_abs_diff": round(float(report["max_abs_diff"]), 6)}
    if report.get("f1") is not None:
        scores["f1"] = report["f1"]
        if f1_torch is not None:
            scores["f1_diff"] = round(report["f1"] - f1_torch, 6)
    return scores


def _export_hf(loaded: LoadedModel, tmp: Path, names: list[str], extra: dict) -> dict:
    from safetensors.torch import save_model

    save_model(loaded.model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    (tmp / CONFIG_FILE).write_text(loaded.meta["encoder_config"], encoding="utf-8")
    write_json_atomic(tmp / META_FILE, export_meta(loaded.meta, "hf", names, **extra))
    # Round trip: the folder must load back to exactly the same logits.
    if loaded.tokenizer is None:
        return {"format": "hf", "source": extra["source"]}
    back = load_hf_folder(tmp)
    original = Predictor.from_loaded(loaded)
    arrays = original.collate(original.encode(BUILTIN_TEXTS))
    with torch.inference_mode():
        a = as_numpy(original.runner(**arrays))
        b = as_numpy(Predictor.from_loaded(back).runner(**arrays))
    if not np.array_equal(a, b):
        raise CheckpointError(f"{tmp}: the exported folder does not reproduce the checkpoint's "
                              "logits")
    log.info("hf: round trip reproduces the checkpoint's logits exactly")
    return {"format": "hf", "source": extra["source"], "round_trip_identical": True}


def _export_onnx(loaded: LoadedModel, tmp: Path, names: list[str], extra: dict,
                 quantize: str | None, parity_docs: int, atol: float, opset: int,
                 optimize: str = "int8", int8: Int8Options | list = Int8Options(),
                 attention: str = "plain") -> dict:
    """``int8``: the quantization, or a list of candidates, each quantized and checked, the one
    :func:`choose_int8` picks kept as model.int8.onnx."""
    if attention not in ATTENTION:
        raise ConfigError(f"attention={attention!r}: expected one of {', '.join(ATTENTION)}")
    started = time.perf_counter()
    fp32_file = tmp / ONNX_FILES["onnx"]
    fusion = {}
    # a width-pruned student's zeroed heads leave the graph (the parity check below compares
    # with the checkpoint as trained)
    model, removed = without_zeroed_heads(loaded.model)
    if attention == "fused":  # model.onnx comes fused (attention included)
        fusion[ONNX_FILES["onnx"]] = export_onnx_fused_attention(model, fp32_file, opset)
    else:
        export_onnx(model, fp32_file, opset)
    log.info("onnx: exported %s in %.1f s%s", ONNX_FILES["onnx"], time.perf_counter() - started,
             f" ({sum(map(len, removed))} zeroed attention heads removed)" if removed else "")
    config = model.encoder.config
    onnx_meta = {"opset": opset, "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME,
                 "files": [ONNX_FILES["onnx"]], "optimize": optimize, "attention": attention,
                 "removed_heads": removed}
    if optimize == "ort" and attention != "fused":
        fusion[ONNX_FILES["onnx"]] = fuse_in_place(fp32_file, config)
    files = {"onnx": fp32_file}  # runner name -> ONNX file to check
    candidates = {}  # runner name -> (file, options) of each int8 variant
    if quantize:
        options = [int8] if isinstance(int8, Int8Options) else list(int8)
        for k, opts in enumerate(options):
            name = "onnx-int8" if len(options) == 1 else f"onnx-int8 ({int8_label(opts)})"
            candidates[name] = (tmp / (ONNX_FILES["onnx-int8"] if k == 0 else f"model.int8.{k}.tmp.onnx"), opts)
        targets = dict(candidates.values())
        if optimize == "int8" and attention != "fused":
            fused = fused_int8(fp32_file, targets, config)
        else:  # the fp32 graph is already fused (attention=fused, optimize=ort) or stays plain (none)
            for target, opts in targets.items():
                quantize_int8(fp32_file, target, opts, attention=attention == "fused")
            fused = fusion.get(ONNX_FILES["onnx"])
        log.info("onnx: %s (fused before quantizing: %s)", ONNX_FILES["onnx-int8"],
                 ", ".join(f"{n} {op}" for op, n in fused.items()) if fused else "nothing")
        files.update({name: file for name, (file, _) in candidates.items()})
    threshold = float((loaded.meta.get("decode") or {}).get("threshold", 0.0))
    for file in files.values():
        add_span_outputs(file, threshold)
    runners = {name: OnnxRunner(file, "onnx-int8" if name in candidates else name)
               for name, file in files.items()}
    if loaded.tokenizer is None:  # a shape export: synthetic inputs, logits only
        report = synthetic_parity(loaded, runners)
        source = "synthetic token ids (random-weights shape model)"
    else:
        predictor = Predictor(TorchRunner(loaded.model, as_trained=True), loaded.tokenizer, loaded.meta, loaded.path)
        docs, source = parity_texts(loaded.meta, parity_docs)
        report = check_parity(predictor, runners, docs, atol)
    tried = {}
    if quantize:
        chosen = choose_int8(report, list(candidates))
        file, int8_options = candidates[chosen]
        if len(candidates) > 1:
            tried = {int8_label(o): _int8_scores(report[name], report.get("f1_torch"))
                     for name, (_, o) in candidates.items()}
            for name, (other, _) in candidates.items():
                if other != file:
                    other.unlink()
            if file.name != ONNX_FILES["onnx-int8"]:
                file.replace(tmp / ONNX_FILES["onnx-int8"])
        chosen_report = report[chosen]
        for name in candidates:
            del report[name]
        report["onnx-int8"] = chosen_report
        fusion[ONNX_FILES["onnx-int8"]] = fused
        onnx_meta["files"].append(ONNX_FILES["onnx-int8"])
        onnx_meta["int8"] = {**int8_options.describe(), "fused_ops": fused,
                             "checked_without_vnni": cpu_lacks_vnni(),
                             **({"reduce_range_auto": tried} if tried else {})}
    onnx_meta["outputs"] = [OUTPUT_NAME, "span_index", "span_scores"]
    onnx_meta["threshold_input"] = {"name": "threshold", "default": threshold}
    # offline fusion per file; each file's op counts; the fused ops onnxruntime runs per file
    # and, as ``fused_ops``, those of the file served by default (int8 when there is one)
    onnx_meta["fusion"] = fusion
    onnx_meta["graph_ops"] = {name: op_counts(tmp / name) for name in onnx_meta["files"]}
    onnx_meta["runtime_fused_ops"] = {name: runtime_fused_ops(tmp / name) for name in onnx_meta["files"]}
    onnx_meta["fused_ops"] = onnx_meta["runtime_fused_ops"][onnx_meta["files"][-1]]
    meta = export_meta(loaded.meta, "onnx", names, onnx=onnx_meta, fused_ops=onnx_meta["fused_ops"],
                       **extra)
    write_json_atomic(tmp / META_FILE, meta)
    kept = ["onnx"] + ["onnx-int8"] * bool(quantize)  # the runtimes of the files kept
    fp32 = report["onnx"]
    summary = {"format": "onnx", "source": extra["source"], "texts": source, "atol": atol,
               **{k: v for k, v in report.items() if k not in kept}, "onnx": fp32}
    if "onnx-int8" in report:
        int8 = dict(report["onnx-int8"])
        if int8.get("f1") is not None and fp32.get("f1") is not None:
            int8["f1_fp32"] = fp32["f1"]
            int8["f1_diff"] = round(int8["f1"] - fp32["f1"], 6)
        int8["reduce_range"] = int8_options.reduce_range
        if tried:
            int8["reduce_range_auto"] = tried
        summary["onnx-int8"] = int8
    print_parity(summary)
    problems = []
    if not fp32["mask_equal"]:
        problems.append("the -inf mask of invalid spans differs")
    if fp32["max_abs_diff"] > atol:
        problems.append(f"max |logit difference| {fp32['max_abs_diff']:.3g} > atol={atol:g}")
    real = fp32.get("mismatched_spans", 0) - fp32.get("borderline_spans", 0)
    if real > 0:
        problems.append(f"{real} spans decode differently")
    for name in kept:
        if report[name].get("compact_windows_differing"):
            problems.append(f"{name}: the compact output (span_index/span_scores) differs from the "
                            f"thresholded logits in {report[name]['compact_windows_differing']} windows")
    if problems:
        raise ParityError(f"ONNX parity check failed: {'; '.join(problems)}", summary)
    return summary


