"""distill.bench: shape models, the measuring API used by distill.compare, the command."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from distill.model.shapes import shape_model
from distill.report.bench import FIELDS, BenchModel, load_bench_model, load_bench_models, measure
from distill.errors import ConfigError


def test_shape_model_is_the_named_architecture():
    model, meta = shape_model("bert-2x64")
    config = model.encoder.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 64, 1)
    assert (config.intermediate_size, config.vocab_size) == (256, 30522)
    assert model.labels == meta["labels"] and len(model.labels) == 4
    assert model.head_config["head_size"] == 64 and meta["info"]["random_weights"]
    with pytest.raises(ConfigError, match="bert-LxH"):
        shape_model("gpt-2x64")
    with pytest.raises(ConfigError, match="distill.export shape="):
        load_bench_model("bert-2x64", runtime="onnx")


def test_measure_interleaves_and_reports_every_field():
    models = [load_bench_model("bert-2x64"), load_bench_model("bert-1x64")]
    assert all(isinstance(m, BenchModel) and m.runtime == "torch" for m in models)
    models[0].run(2, 8)  # the API compare uses: one forward + decode
    rows = measure(models, [(1, 8), (2, 16)], warmup=1, repeats=3)
    assert [(r["model"], r["batch"], r["tokens"]) for r in rows] == [
        ("bert-2x64", 1, 8), ("bert-1x64", 1, 8), ("bert-2x64", 2, 16), ("bert-1x64", 2, 16)]
    for r in rows:
        assert set(r) == set(FIELDS)
        assert 0 < r["p50_ms"] <= r["p95_ms"] and r["per_second"] > 0
        assert 0 <= r["decode_ms"] <= r["p95_ms"] and 0 <= r["decode_share"] <= 1


def test_checkpoints_and_export_folders(tiny_teacher_ckpt):
    from test_export import exported

    export_dir = exported(tiny_teacher_ckpt)
    models = [load_bench_model(str(tiny_teacher_ckpt / "best.ckpt"))]
    models += load_bench_models(str(export_dir))
    assert [m.runtime for m in models] == ["torch", "onnx", "onnx-int8"]
    assert load_bench_model(str(export_dir)).runtime == "onnx"
    rows = measure(models, [(2, 12)], warmup=1, repeats=2)
    assert [r["runtime"] for r in rows] == ["torch", "onnx", "onnx-int8"]
    assert rows[0]["model"] == str(tiny_teacher_ckpt / "best.ckpt")


def test_bench_command_writes_json(tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from distill.report.bench import run

    out = tmp_path / "bench.json"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("bench", overrides=["models=[bert-2x64,bert-1x64]", "lengths=[8,16]",
                                          "batch=4", "batch_tokens=8", "repeats=2", "warmup=1",
                                          f"output={out}", "progress=false", "threads=1"])
    run(cfg)
    report = json.loads(out.read_text())
    assert report["threads"] == 1
    assert [(r["model"], r["batch"], r["tokens"]) for r in report["results"]] == [
        ("bert-2x64", 1, 8), ("bert-1x64", 1, 8), ("bert-2x64", 1, 16), ("bert-1x64", 1, 16),
        ("bert-2x64", 4, 8), ("bert-1x64", 4, 8)]
    for r in report["results"]:
        assert set(r) == set(FIELDS) and r["runtime"] == "torch"
    printed = capsys.readouterr().out
    assert "torch threads: 1" in printed and "p50 ms" in printed and "bert-1x64" in printed


def test_reference_recipe_row_ratio_and_length_plot(tmp_path, capsys):
    """recipe:<shape> is the hand-made onnxruntime int8 encoder; every row of a case gets its p50
    over the recipe's; plot= draws latency against length."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not importable")
    from hydra import compose, initialize_config_dir

    from distill.report.bench import run

    out, plot = tmp_path / "bench.json", tmp_path / "latency.png"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("bench", overrides=["models=[bert-2x64,recipe:bert-2x64]", "lengths=[8,16]",
                                          "batch=2", "batch_tokens=8", "repeats=3", "warmup=1",
                                          f"output={out}", f"plot={plot}", "progress=false"])
    rows = run(cfg)["results"]
    assert [(r["model"], r["runtime"]) for r in rows[:2]] == [("bert-2x64", "torch"),
                                                              ("recipe:bert-2x64", "recipe-int8")]
    for case in (rows[0:2], rows[2:4], rows[4:6]):
        torch_row, recipe_row = case
        assert recipe_row["vs_recipe"] == 1.0 and recipe_row["decode_share"] < 0.05  # no decoding
        assert torch_row["vs_recipe"] == pytest.approx(torch_row["p50_ms"] / recipe_row["p50_ms"],
                                                       rel=1e-3)
    assert "vs recipe" in capsys.readouterr().out
    assert plot.is_file() and plot.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="recipe runs in onnxruntime int8"):
        load_bench_model("recipe:bert-2x64", runtime="torch")
