"""distill.export: ONNX parity (logits and entities), int8, the HF folder round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill.io.load import load_checkpoint
from distill.errors import CheckpointError, ConfigError
from distill.deploy.export import export
from distill.deploy.parity import check_parity
from distill.io.export_format import META_FILE, load_hf_folder
from distill.deploy.predict import Predictor

pytest.importorskip("onnxruntime", reason="onnxruntime is not importable")

TEXTS = ["EU rejects German call to boycott British lamb.",
         " ".join(["Peter Blackburn reported from Brussels on Tuesday."] * 15),
         "Barack Obama visited Paris."]


def exported(run_dir):
    """``python -m distill.export ckpt=<run dir> quantize=int8`` into the default <run>/export,
    once per test session (test_bench uses it too)."""
    pytest.importorskip("onnxscript", reason="onnxscript is not importable")
    out = run_dir / "export"
    if not (out / "parity.json").is_file():
        summary = export(ckpt=str(run_dir), quantize="int8", parity_docs=30)
        assert summary["output"] == str(out)
    return out


@pytest.fixture(scope="module")
def onnx_dir(tiny_teacher_ckpt):
    return exported(tiny_teacher_ckpt)


def spans(predictions):
    return [[(p.start, p.end, p.type) for p in doc] for doc in predictions]


def test_onnx_folder_and_parity_report(onnx_dir):
    names = {p.name for p in onnx_dir.iterdir()}
    assert {"model.onnx", "model.int8.onnx", META_FILE, "parity.json", "tokenizer.json"} <= names
    meta = json.loads((onnx_dir / META_FILE).read_text())
    assert meta["labels"] and meta["data"]["max_length"] and "threshold" in meta["decode"]
    assert meta["head"]["head"] == "global_pointer" and meta["kind"] == "onnx"
    # the int8 file was fused before quantizing: residual LayerNorms and bias+Gelu of every layer
    layers = 2  # the tiny teacher of conftest
    fused = meta["onnx"]["int8"]["fused_ops"]
    assert fused["SkipLayerNormalization"] == 2 * layers and fused["BiasGelu"] == layers
    int8_ops = {n.op_type for n in __import__("onnx").load(onnx_dir / "model.int8.onnx").graph.node}
    assert {"SkipLayerNormalization", "DynamicQuantizeLinear"} <= int8_ops
    assert not list(onnx_dir.glob("*.tmp.onnx"))
    parity = json.loads((onnx_dir / "parity.json").read_text())
    assert "dev" in parity["texts"] and parity["documents"] == 30
    assert parity["onnx"]["max_abs_diff"] < 1e-4 and parity["onnx"]["entities_identical"]
    assert parity["onnx"]["mask_equal"]
    int8 = parity["onnx-int8"]
    assert 0 <= int8["agreement"] <= 1 and "f1_diff" in int8 and int8["f1_fp32"] == parity["onnx"]["f1"]


def test_onnx_has_dynamic_axes_and_matches_torch(onnx_dir, tiny_teacher_ckpt):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_dir / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "content_mask"]
    for i in session.get_inputs():
        assert all(isinstance(d, str) for d in i.shape)  # batch and sequence are symbolic
    torch_predictor = Predictor.from_path(tiny_teacher_ckpt)
    onnx_predictor = Predictor.from_path(onnx_dir, runtime="onnx")
    for batch_size in (1, 3):  # different batch sizes and padded lengths
        arrays = torch_predictor.collate(torch_predictor.encode(TEXTS)[:batch_size + 1])
        ref = torch_predictor.runner(**arrays).numpy()
        out = onnx_predictor.runner(**arrays)
        finite = np.isfinite(ref)
        assert np.array_equal(np.isfinite(out), finite)
        assert np.abs(out[finite] - ref[finite]).max() < 1e-4
    assert spans(onnx_predictor.predict(TEXTS)) == spans(torch_predictor.predict(TEXTS))


def test_int8_model_loads_and_runs(onnx_dir):
    predictor = Predictor.from_path(onnx_dir, runtime="onnx-int8")
    assert predictor.runtime == "onnx-int8"
    for text, predictions in zip(TEXTS, predictor.predict(TEXTS)):
        for p in predictions:
            assert 0 <= p.start < p.end <= len(text) and text[p.start:p.end].strip()


def test_onnx_folder_is_not_a_torch_model(onnx_dir):
    with pytest.raises(CheckpointError, match="runtime=onnx"):
        Predictor.from_path(onnx_dir, runtime="torch")
    with pytest.raises(CheckpointError, match="runtime=onnx"):
        load_checkpoint(onnx_dir)


def test_hf_folder_round_trip(tiny_teacher_ckpt, tmp_path):
    out = tmp_path / "hf"
    summary = export(ckpt=str(tiny_teacher_ckpt / "best.ckpt"), output=str(out), format="hf")
    assert summary["round_trip_identical"]
    assert {"model.safetensors", "config.json", META_FILE, "tokenizer.json"} <= {p.name for p in out.iterdir()}
    loaded = load_checkpoint(out)  # folders are dispatched to load_hf_folder
    original = load_checkpoint(tiny_teacher_ckpt)
    assert loaded.labels == original.labels and loaded.meta["data"] == original.meta["data"]
    assert loaded.meta["decode"] == original.meta["decode"]
    a = Predictor.from_path(out).predict(TEXTS)
    b = Predictor.from_path(tiny_teacher_ckpt).predict(TEXTS)
    assert a == b  # identical weights, identical floats

    # Exporting again replaces the folder; pickled weights are refused in one line.
    export(ckpt=str(tiny_teacher_ckpt), output=str(out), format="hf")
    (out / "model.safetensors").rename(out / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused to load pytorch_model.bin") as err:
        load_hf_folder(out)
    assert "\n" not in str(err.value)
    (out / "pytorch_model.bin").unlink()
    (out / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hf_folder(out)


def test_export_refuses_to_overwrite_other_folders(tiny_teacher_ckpt, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an export folder"):
        export(ckpt=str(tiny_teacher_ckpt), output=str(tmp_path), format="hf")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(ConfigError, match="exactly one"):
        export(output=str(tmp_path / "x"))


def test_parity_check_reports_differences(tiny_teacher_ckpt):
    """A runner off by 0.01 is reported (and would fail the export at atol=1e-3)."""
    from distill.data.document import Document

    predictor = Predictor.from_path(tiny_teacher_ckpt)
    exact = lambda **arrays: predictor.runner(**arrays).numpy()  # noqa: E731
    shifted = lambda **arrays: predictor.runner(**arrays).numpy() + 0.01  # noqa: E731
    docs = [Document(t) for t in TEXTS]
    report = check_parity(predictor, {"same": exact, "off": shifted}, docs, atol=1e-3)
    assert report["same"]["max_abs_diff"] == 0 and report["same"]["entities_identical"]
    assert report["off"]["max_abs_diff"] == pytest.approx(0.01, abs=1e-4)
    assert report["off"]["mask_equal"] and report["f1_torch"] is None  # no gold


def test_export_fails_on_parity_mismatch_and_writes_nothing(onnx_dir, tiny_teacher_ckpt, tmp_path,
                                                            monkeypatch):
    import shutil

    from distill.deploy import export as export_module
    from distill.deploy.runners import OnnxRunner

    monkeypatch.setattr(export_module, "export_onnx",
                        lambda model, file, opset=18: shutil.copy(onnx_dir / "model.onnx", file))
    original = OnnxRunner.__call__
    shifted = lambda out: out + 0.5 if isinstance(out, np.ndarray) else out  # the dense logits
    monkeypatch.setattr(OnnxRunner, "__call__", lambda self, *a, **k: shifted(original(self, *a, **k)))
    out = tmp_path / "export"
    with pytest.raises(CheckpointError, match="parity check failed") as err:
        export(ckpt=str(tiny_teacher_ckpt), output=str(out), parity_docs=5)
    assert "atol" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["export.parity-failed.json"]
    report = json.loads((tmp_path / "export.parity-failed.json").read_text())
    assert report["onnx"]["max_abs_diff"] == pytest.approx(0.5, abs=1e-3)


def test_int8_falls_back_to_the_plain_graph_with_a_warning(onnx_dir, tmp_path, monkeypatch, caplog):
    import onnxruntime.transformers.optimizer as optimizer

    from distill.deploy.export import Int8Options, fused_int8

    def broken(*args, **kwargs):
        raise RuntimeError("pattern not understood")

    monkeypatch.setattr(optimizer, "optimize_model", broken)
    target = tmp_path / "model.int8.onnx"
    with caplog.at_level("WARNING", logger="distill"):
        assert fused_int8(onnx_dir / "model.onnx", {target: Int8Options()}, config=None) is None
    assert "graph fusion skipped (RuntimeError: pattern not understood)" in caplog.text
    assert target.is_file() and not list(tmp_path.glob("*.tmp.onnx"))


def test_distill_json_has_the_fused_ops_onnxruntime_runs(onnx_dir):
    meta = json.loads((onnx_dir / META_FILE).read_text())
    layers = 2  # the tiny teacher of conftest
    fused = meta["fused_ops"]
    assert fused == meta["onnx"]["fused_ops"] == meta["onnx"]["runtime_fused_ops"]["model.int8.onnx"]
    assert fused["SkipLayerNormalization"] == 2 * layers and fused["BiasGelu"] == layers
    assert fused["DynamicQuantizeMatMul"] >= 2 * layers  # int8 matmuls
    assert "DynamicQuantizeMatMul" not in meta["onnx"]["runtime_fused_ops"]["model.onnx"]
    assert meta["onnx"]["graph_ops"]["model.onnx"]["MatMul"] > 0


def test_tiny_mpnet_fuses_without_bert_embeddings(tmp_path):
    """MPNet's positions start after the padding id: fusing its embeddings as BERT's
    (EmbedLayerNormalization) put a tiny MPNet's int8 logits 1.7 off (0.02 unfused). 7-bit
    weights (reduce_range): with full-range ones this random model's int8 logits are 0.33 off on
    a CPU without VNNI (AVX2 only; 0.02 with VNNI), whatever the fusion."""
    pytest.importorskip("onnxscript", reason="onnxscript is not importable")
    import torch
    from transformers import AutoModel, MPNetConfig

    from distill.deploy.export import Int8Options, _export_onnx
    from distill.io.checkpoint import LoadedModel
    from distill.model.encoders import without_pooler
    from distill.model.span_ner import SpanNER

    config = MPNetConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66)
    torch.manual_seed(0)
    model = SpanNER(without_pooler(AutoModel.from_config(config)), ["A", "B"]).eval()
    meta = {"format": "distill-checkpoint/1", "encoder_config": config.to_json_string(use_diff=False),
            "labels": ["A", "B"], "head": dict(model.head_config),
            "data": {"max_length": 64, "stride": 16, "flat": False},
            "decode": {"threshold": 0.0, "flat": False}, "info": {"random_weights": True}}
    report = _export_onnx(LoadedModel(model, None, meta, tmp_path / "tiny-mpnet"), tmp_path, [],
                          {"source": "tiny-mpnet"}, "int8", 0, 1e-3, 18,
                          int8=Int8Options(reduce_range=True))
    fused = json.loads((tmp_path / META_FILE).read_text())["fused_ops"]
    assert not any("EmbedLayerNormalization" in op for op in fused)
    assert fused["SkipLayerNormalization"] == 2 * 2 + 1 and fused["BiasGelu"] == 2  # + embeddings' Add+LN
    assert report["onnx"]["max_abs_diff"] < 1e-4
    assert report["onnx-int8"]["max_abs_diff"] < 0.2, report["onnx-int8"]["max_abs_diff"]


def test_choose_int8_ranks_f1_then_logit_difference_then_full_range():
    from distill.deploy.export import choose_int8

    full, reduced = "onnx-int8 (full range)", "onnx-int8 (reduce_range)"
    pick = lambda a, b: choose_int8({full: a, reduced: b}, [full, reduced])  # noqa: E731
    assert pick({"f1": 0.0, "max_abs_diff": 38.0}, {"f1": 0.94, "max_abs_diff": 4.2}) == reduced
    assert pick({"f1": 0.95, "max_abs_diff": 4.0}, {"f1": 0.94, "max_abs_diff": 1.0}) == full
    assert pick({"f1": 0.9, "max_abs_diff": 2.0}, {"f1": 0.9, "max_abs_diff": 1.0}) == reduced
    assert pick({"max_abs_diff": 0.3}, {"max_abs_diff": 0.03}) == reduced  # shape exports: no F1
    assert pick({"f1": None, "max_abs_diff": 1.0}, {"f1": None, "max_abs_diff": 1.0}) == full


def test_reduce_range_auto_keeps_the_candidate_that_matches_pytorch(tiny_teacher_ckpt, tmp_path, monkeypatch):
    """A full-range int8 model that decodes nothing (trained MPNet students on a CPU without VNNI
    did: F1 0) is not the one kept: here the 7-bit candidate is made exact (the fp32 graph) and
    the full-range one real int8; auto must keep the exact one, drop the other, and say so."""
    import shutil

    import distill.deploy.export as ex

    real = ex.quantize_int8

    def fake(source, target, options=ex.Int8Options(), attention=False):
        if options.reduce_range:
            shutil.copyfile(source, target)
        else:
            real(source, target, options, attention)

    monkeypatch.setattr(ex, "quantize_int8", fake)
    out = tmp_path / "export"
    summary = ex.export(ckpt=str(tiny_teacher_ckpt), output=str(out), quantize="int8", parity_docs=30)
    assert summary["onnx-int8"]["reduce_range"] is True and summary["onnx-int8"]["max_abs_diff"] < 1e-4
    tried = summary["onnx-int8"]["reduce_range_auto"]
    assert tried["full range"]["max_abs_diff"] > tried["reduce_range"]["max_abs_diff"]
    meta = json.loads((out / META_FILE).read_text())
    assert meta["onnx"]["int8"]["reduce_range"] is True and meta["onnx"]["int8"]["reduce_range_auto"] == tried
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.int8.onnx", "model.onnx"]
    # the kept file is the exact one: no quantized matmul in it
    ops = {n.op_type for n in __import__("onnx").load(out / "model.int8.onnx").graph.node}
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    # reduce_range=false keeps full range whatever it scores
    summary = ex.export(ckpt=str(tiny_teacher_ckpt), output=str(tmp_path / "full"), quantize="int8",
                        parity_docs=30, reduce_range=False)
    assert summary["onnx-int8"]["reduce_range"] is False and "reduce_range_auto" not in summary["onnx-int8"]


def test_int8_weights_have_one_scale_per_output_channel(onnx_dir):
    """Per-channel weight scales (one per output column of every quantized weight matrix): one
    scale per matrix lost 2.6 dev F1 on a CoNLL teacher. The choice is written to distill.json."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_dir / "model.int8.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    used = {n.input[1] for n in model.graph.node if n.op_type == "MatMulInteger"}
    matrices = {name[: -len("_quantized")]: w for name, w in inits.items()
                if name in used and name.endswith("_quantized")}
    assert len(matrices) >= 4  # the tiny teacher: 2 layers x (q, k, v, o, ffn) + the head
    for base, w in matrices.items():
        scale = inits[base + "_scale"]
        assert scale.size == w.shape[-1] > 1, (base, scale.shape, w.shape)
    meta = json.loads((onnx_dir / META_FILE).read_text())
    assert "per output channel" in meta["onnx"]["int8"]["quantization"]
    # the default (reduce_range=auto) quantized both ways and kept the one its parity scored best
    int8 = meta["onnx"]["int8"]
    tried = int8["reduce_range_auto"]
    assert set(tried) == {"full range", "reduce_range"}
    rank = {k: (-v.get("f1", 0.0), v["max_abs_diff"], k != "full range") for k, v in tried.items()}
    assert ("reduce_range" if int8["reduce_range"] else "full range") == min(rank, key=rank.get)
    parity = json.loads((onnx_dir / "parity.json").read_text())["onnx-int8"]
    kept = tried["reduce_range" if int8["reduce_range"] else "full range"]
    assert parity["reduce_range"] is int8["reduce_range"] and parity["max_abs_diff"] == pytest.approx(kept["max_abs_diff"])
    # the default keeps the embedding tables fp32
    assert meta["onnx"]["int8"]["embeddings"] == "fp32"
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    assert gathers and all(inits[n.input[0]].dtype == np.float32 for n in gathers)


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_compact_output_gives_the_rows_of_the_old_decode(onnx_dir, runtime):
    """The graph's span_index/span_scores (the spans above the threshold input) are exactly the
    rows that thresholding the dense logits gives, at any threshold; predictions through either
    form are identical, and the export's parity check says so."""
    from distill.eval.decode import SpanRows, threshold_spans

    predictor = Predictor.from_path(onnx_dir, runtime=runtime)
    runner = predictor.runner
    assert runner.compact
    arrays = predictor.collate(predictor.encode(TEXTS))
    dense = runner(**arrays)
    assert dense.ndim == 4
    finite = dense[np.isfinite(dense)]
    for threshold in (0.0, float(np.quantile(finite, 0.5)), float(np.quantile(finite, 0.99)),
                      float(finite.max()) + 1):
        compact = runner(**arrays, threshold=threshold)
        assert isinstance(compact, SpanRows) and compact.windows == len(dense)
        got, want = threshold_spans(compact, threshold), threshold_spans(dense, threshold)
        assert len(got) == len(want) == len(dense)
        for a, b in zip(got, want):
            assert a.shape == b.shape and np.array_equal(a, b)
    with_compact = predictor.predict(TEXTS)
    runner.compact = False  # what an export from before the compact output does
    assert predictor.predict(TEXTS) == with_compact
    parity = json.loads((onnx_dir / "parity.json").read_text())
    assert parity[runtime]["compact_windows_differing"] == 0
    meta = json.loads((onnx_dir / META_FILE).read_text())
    assert meta["onnx"]["outputs"] == ["logits", "span_index", "span_scores"]


def test_fused_attention_export_matches_pytorch(tiny_teacher_ckpt, tmp_path):
    """attention=fused: the encoder's attention becomes onnxruntime's Attention (QAttention in
    int8); the fp32 file still decodes the same entities as PyTorch, and the compact output holds."""
    out = tmp_path / "fused"
    summary = export(ckpt=str(tiny_teacher_ckpt), output=str(out), quantize="int8", parity_docs=20,
                     attention="fused")
    assert summary["onnx"]["max_abs_diff"] < 1e-4 and summary["onnx"]["entities_identical"]
    assert summary["onnx"]["compact_windows_differing"] == 0
    assert summary["onnx-int8"]["compact_windows_differing"] == 0
    meta = json.loads((out / META_FILE).read_text())
    layers = 2  # the tiny teacher of conftest
    assert meta["onnx"]["attention"] == "fused"
    assert meta["onnx"]["fusion"]["model.onnx"]["Attention"] == layers
    assert meta["fused_ops"]["QAttention"] == layers
    assert Predictor.from_path(out, runtime="onnx-int8").predict(TEXTS)  # serves


def test_fused_attention_refuses_what_it_cannot_fuse(tmp_path):
    import torch
    from transformers import AutoModel, MPNetConfig

    from distill.deploy.export import export_onnx_fused_attention
    from distill.model.encoders import without_pooler
    from distill.model.span_ner import SpanNER

    config = MPNetConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66)
    torch.manual_seed(0)
    model = SpanNER(without_pooler(AutoModel.from_config(config)), ["A"])
    with pytest.raises(ConfigError, match="BERT encoders only"):
        export_onnx_fused_attention(model, tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="attention="):
        export(shape="bert-1x64", output=str(tmp_path / "x"), attention="nope")


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_an_exporter_failure_is_one_line_naming_the_step(exporter, tmp_path, monkeypatch, capsys):
    import logging

    import torch

    from distill.deploy import export as export_module
    from distill.model.shapes import shape_model

    def broken(*args, **kwargs):
        print("exporter chatter that must not reach the user")
        raise RuntimeError("unsupported operator\n  at line 3")

    monkeypatch.setattr(torch.onnx, "export", broken)
    model, _ = shape_model("bert-1x64")
    level = logging.getLogger("torch.onnx").level
    if exporter == "dynamo":
        call, what = (lambda: export_module.export_onnx(model, tmp_path / "m.onnx")), "ONNX export"
    else:
        call = lambda: export_module.export_encoder_torchscript(model.encoder, tmp_path / "e.onnx", 17, "recipe export")
        what = "recipe export"
    with pytest.raises(CheckpointError) as info:
        call()
    assert str(info.value) == f"{what} failed (RuntimeError: unsupported operator at line 3)"
    assert logging.getLogger("torch.onnx").level == level  # the loggers are put back
    assert "chatter" not in capsys.readouterr().out


def test_full_range_int8_checked_with_vnni_warns_on_a_cpu_without(monkeypatch, caplog, tmp_path):
    import distill.deploy.runners as runners

    def meta(**int8):
        return {"onnx": {"int8": int8}}

    for lacks, int8, warned in [(True, dict(reduce_range=False, checked_without_vnni=False), True),
                                (True, dict(reduce_range=False), True),  # exports from before the field
                                (True, dict(reduce_range=False, checked_without_vnni=True), False),
                                (True, dict(reduce_range=True, checked_without_vnni=False), False),
                                (False, dict(reduce_range=False, checked_without_vnni=False), False)]:
        monkeypatch.setattr(runners, "cpu_lacks_vnni", lambda lacks=lacks: lacks)
        caplog.clear()
        with caplog.at_level("WARNING", logger="distill"):
            runners.warn_full_range_int8(tmp_path, meta(**int8))
        assert ("no VNNI" in caplog.text) is warned, (lacks, int8)
