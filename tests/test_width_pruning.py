"""Width pruning: heads and FFN neurons kept by importance, exactness, reload, errors, CLI."""

import copy
import json

import pytest
import torch

from distill.errors import ConfigError
from distill.model.span_ner import SpanNER, span_mask
from distill.train.losses import multilabel_categorical_crossentropy
from distill.train.students import build_student
from distill.train.width import check_width, importance, prune_width, train_batches
from test_teacher import run_cli


# the shared fixture (dm, tokenizer, teacher, batch) of the student tests
from test_student import setup  # noqa: E402,F401


def _logits(model, batch):
    with torch.no_grad():
        return model.eval()(batch["input_ids"], batch["attention_mask"], batch["content_mask"])


def _loss(model, batch):
    return multilabel_categorical_crossentropy(_logits(model, batch), batch["targets"],
                                               span_mask(batch["content_mask"]), batch["labeled"])


def test_keeping_everything_reproduces_the_teacher(setup):
    dm, _, teacher, batch = setup
    student = build_student(teacher, [0, 1, 2, 3])
    hs, fs = importance(student, train_batches(dm.dataset("train"), 2, 8))
    prune_width(student, 2, 64, hs, fs)
    assert torch.equal(_logits(student, batch), _logits(teacher, batch))


def test_zeroed_head_equals_physically_removed_head(setup):
    dm, _, teacher, batch = setup
    a, b = build_student(teacher, [0, 1]), build_student(teacher, [0, 1])
    hs, fs = importance(a, train_batches(dm.dataset("train"), 2, 8))
    prune_width(a, 1, 16, hs, fs)
    prune_width(b, 1, 16, hs, fs, physical=True)
    assert torch.allclose(_logits(a, batch), _logits(b, batch), atol=1e-5)


def test_inference_removes_exactly_the_zeroed_heads(setup):
    from distill.deploy.runners import TorchRunner
    from distill.model.heads import without_zeroed_heads, zeroed_heads

    dm, _, teacher, batch = setup
    student = build_student(teacher, [0, 1, 2])
    assert without_zeroed_heads(student) == (student, [])  # nothing pruned: the model itself
    hs, fs = importance(student, train_batches(dm.dataset("train"), 2, 8))
    kept = prune_width(student, 1, None, hs, fs)
    dropped = [[h for h in range(2) if h not in keep] for keep in kept["heads"]]
    assert zeroed_heads(student.encoder) == dropped
    slim, removed = without_zeroed_heads(student)
    assert removed == dropped and slim is not student
    assert slim.encoder.config.pruned_heads == dict(enumerate(dropped))
    assert zeroed_heads(student.encoder) == dropped  # the checkpoint's model is untouched
    d = student.encoder.config.hidden_size // 2
    for layer in slim.encoder.encoder.layer:
        assert layer.attention.self.query.weight.shape[0] == d
        assert layer.attention.output.dense.weight.shape[1] == d
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(student) - n(slim) == 3 * (4 * d * student.encoder.config.hidden_size + 3 * d)
    assert torch.allclose(_logits(slim, batch), _logits(student, batch), atol=1e-5)
    # inference runs the slim copy; a parity check asks for the model as trained
    assert TorchRunner(student).removed_heads == dropped
    assert TorchRunner(student, as_trained=True).model is student
    # one live head made nonzero again is no longer removed
    with torch.no_grad():
        student.encoder.encoder.layer[0].attention.output.dense.weight[0, dropped[0][0] * d] = 1.0
    assert without_zeroed_heads(student)[1][0] == []


def test_gradient_importance_is_the_loss_derivative_of_scaling_the_head(setup):
    """Hand computation: scaling head h's columns of the output projection by t gives
    dL/dt = Σ W[:, h]·∂L/∂W[:, h] at t=1, which must equal the mask gradient."""
    _, _, teacher, batch = setup
    student = build_student(teacher, [0, 1]).eval()
    hs, fs = importance(student, [batch])
    d = student.encoder.config.hidden_size // student.encoder.config.num_attention_heads
    logits = student(batch["input_ids"], batch["attention_mask"], batch["content_mask"])
    loss = multilabel_categorical_crossentropy(logits, batch["targets"],
                                               span_mask(batch["content_mask"]), batch["labeled"])
    loss.backward()
    for k in range(2):
        w = student.encoder.encoder.layer[k].attention.output.dense.weight
        for h in range(2):
            cols = slice(h * d, (h + 1) * d)
            expected = (w[:, cols] * w.grad[:, cols]).sum().abs()
            assert hs[k, h].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-9)
        down = student.encoder.encoder.layer[k].output.dense.weight
        expected_ffn = (down * down.grad).sum(0).abs()
        assert torch.allclose(fs[k], expected_ffn, rtol=1e-4, atol=1e-9)
    assert hs.sum() > 0


def test_magnitude_importance_shapes(setup):
    _, _, teacher, _ = setup
    hs, fs = importance(build_student(teacher, [0, 1]), [], "magnitude")
    assert hs.shape == (2, 2) and fs.shape == (2, 64) and (hs > 0).all()


def test_pruned_model_reloads_with_automodel(setup, tmp_path):
    from transformers import AutoModel

    dm, _, teacher, batch = setup
    student = build_student(teacher, [0, 2])
    hs, fs = importance(student, train_batches(dm.dataset("train"), 2, 8))
    prune_width(student, 1, 16, hs, fs)
    student.encoder.save_pretrained(tmp_path)
    reloaded = copy.deepcopy(student)
    reloaded.encoder = AutoModel.from_pretrained(tmp_path, add_pooling_layer=False)
    assert reloaded.encoder.config.intermediate_size == 16
    assert torch.allclose(_logits(reloaded, batch), _logits(student, batch), atol=1e-6)


@pytest.mark.parametrize("heads, ffn, message", [
    (3, None, "student.heads"), (0, None, "student.heads"), ("2", None, "student.heads"),
    (1.5, None, "student.heads"), (None, 0, "student.ffn"), (None, 65, "student.ffn"),
    (None, True, "student.ffn")])
def test_bad_values(setup, heads, ffn, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_width(setup[2].encoder.config, heads, ffn)
    assert "\n" not in str(err.value)


def test_mpnet_tiny(setup):
    from transformers import MPNetConfig, MPNetModel

    _, _, teacher, batch = setup
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=teacher.encoder.config.vocab_size, hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    model = SpanNER(MPNetModel(config, add_pooling_layer=False), teacher.labels).eval()
    ref = _logits(model, batch)
    hs, fs = importance(model, [batch])
    assert hs.shape == (2, 2) and fs.shape == (2, 64)
    full = copy.deepcopy(model)
    prune_width(full, 2, 64, hs, fs)
    assert torch.equal(_logits(full, batch), ref)
    prune_width(model, 1, 16, hs, fs)
    assert torch.isfinite(_logits(model, batch).nan_to_num(neginf=0)).all()


def test_student_cli_with_heads_and_ffn(tiny_teacher_ckpt, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("distill.student", f"teacher={tiny_teacher_ckpt / 'best.ckpt'}", "student.depth=2",
            "student.heads=1", "student.ffn=16", "trainer=fast_dev_run", "logger=none",
            f"kd.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["student"]["heads"] == 1 and m["student"]["ffn"] == 16
    assert m["student"]["intermediate_size"] == 16 and len(m["student"]["kept_heads"]) == 2
    assert m["student"]["params"] < m["teacher"]["model"]["params"]
    assert "student width: 1 heads of 2 and 16 FFN neurons of 64 kept per layer, by gradient" \
        in (run_dir / "student.log").read_text()
    # a narrow student exports like any other: fp32 ONNX identical to PyTorch, int8 fused and
    # quantized, the compact output equal to thresholding the logits
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from distill.deploy.export import export

    summary = export(ckpt=str(run_dir), quantize="int8", parity_docs=10)
    assert summary["onnx"]["max_abs_diff"] < 1e-4 and summary["onnx"]["entities_identical"]
    assert summary["onnx"]["compact_windows_differing"] == 0
    assert summary["onnx-int8"]["compact_windows_differing"] == 0
    meta = json.loads((run_dir / "export" / "distill.json").read_text())
    # the zeroed heads are not in the graph (one of two per layer)
    assert [len(r) for r in meta["onnx"]["removed_heads"]] == [1, 1]
    assert meta["fused_ops"]["SkipLayerNormalization"] == 2 * 2 and meta["fused_ops"]["BiasGelu"] == 2
    # zeroed heads keep the shapes: onnxruntime's fused Attention serves the narrow student too
    fused = export(ckpt=str(run_dir), output=str(run_dir / "fused"), quantize="int8", parity_docs=10,
                   attention="fused")
    assert fused["onnx"]["max_abs_diff"] < 1e-4 and fused["onnx"]["entities_identical"]
