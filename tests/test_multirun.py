"""Hydra multirun end to end: a tiny teacher, a student sweep over two depths, then
``distill.compare`` on the sweep; and the task functions' return value (the sweeper objective)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distill import compare as command
from distill.report import compare

REPO = Path(__file__).resolve().parents[1]
SMALL = ["trainer=fast_dev_run", "data.limit_train=40", "data.limit_eval=20"]


def run_cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{module} {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.parametrize("module, train", [("distill.teacher", "train_teacher"),
                                           ("distill.student", "train_student")])
def test_main_returns_the_optimized_metric(module, train, monkeypatch):
    """What an Optuna sweep maximises: main() returns metrics[split][key] for
    optimized_metric=split/key, None without it."""
    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, train, lambda cfg: {"dev": {"f1": 0.75}, "test": {"f1": 0.5}})
    assert mod.main(OmegaConf.create({"optimized_metric": "dev/f1"})) == 0.75
    assert mod.main(OmegaConf.create({"optimized_metric": "test/f1"})) == 0.5
    assert mod.main(OmegaConf.create({"optimized_metric": None})) is None


@pytest.fixture(scope="module")
def tiny_teacher(tiny_bert, tmp_path_factory) -> Path:
    """A fast_dev_run teacher on the bundled sample corpus, 2 layers (enough for depth 1 and 2)."""
    root = tmp_path_factory.mktemp("multirun")
    run_cli("distill.teacher", [f"model.name_or_path={tiny_bert}", *SMALL,
                                f"hydra.run.dir={root / 'teacher'}"], cwd=root)
    assert (root / "teacher" / "metrics.json").is_file()
    return root / "teacher"


@pytest.fixture(scope="module")
def student_sweep(tiny_teacher) -> Path:
    """``python -m distill.student -m ... student.depth=1,2``: two jobs, run one after the other."""
    root = tiny_teacher.parent
    sweep = root / "sweep"
    out = run_cli("distill.student", [
        "-m", f"teacher={tiny_teacher}", "student.depth=1,2", *SMALL,
        f"kd.cache_dir={root / 'cache'}", f"hydra.sweep.dir={sweep}",
        # the recipes' readable job folder names
        "hydra.sweep.subdir=${hydra.job.num}_d${student.depth}_${student.pruning}_kd-${hydra:runtime.choices.kd}",
    ], cwd=root)
    assert "Launching 2 jobs locally" in out.stdout + out.stderr
    return sweep


@pytest.mark.slow
def test_student_multirun_then_compare(tiny_teacher, student_sweep, capsys):
    sweep, root = student_sweep, tiny_teacher.parent
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_d1_bottom_kd-default", "1_d2_bottom_kd-default"]  # bottom: the default
    assert command.main([str(sweep), "--output", str(root / "report"), "--no-latency"]) == 0
    printed = capsys.readouterr().out
    rows = compare.compare([sweep], root / "report2", latency=False)["rows"]
    # the teacher comes in through the students' checkpoint path; then depth 2, depth 1
    assert [(r["role"], r["depth"]) for r in rows] == [("teacher", 2), ("student", 2), ("student", 1)]
    teacher_ckpt = json.loads((tiny_teacher / "metrics.json").read_text())["checkpoint"]
    assert rows[0]["checkpoint"] == str(Path(teacher_ckpt).resolve())
    for row in rows[1:]:
        metrics = json.loads((sweep / Path(row["run"]).name / "metrics.json").read_text())
        expected = metrics["test"]["f1"] / metrics["teacher"]["test"]["f1"]
        assert row["retention_pct"] == pytest.approx(100 * expected)
    md = (root / "report" / "comparison.md").read_text()
    assert "| teacher 2L |" in printed and "| 1L bottom KD |" in printed
    assert md.split("## Failed or incomplete runs")[1].strip() == "None."
    assert (root / "report" / "comparison.csv").is_file()
    assert (root / "report" / "f1_vs_depth.png").is_file()


@pytest.mark.slow
def test_compare_measures_latency_of_the_sweep(tiny_teacher, student_sweep):
    pytest.importorskip("distill.bench")
    root = tiny_teacher.parent
    result = compare.compare([tiny_teacher, student_sweep], root / "latency", repeats=1, warmup=0)
    rows = result["rows"]
    assert len(rows) == 3 and all(r["p50_ms"] > 0 and r["throughput_per_s"] > 0 for r in rows)
    assert rows[0]["speedup"] == 1.0 and all(r["speedup"] > 0 for r in rows[1:])
    assert (root / "latency" / "f1_vs_latency.png").stat().st_size > 0


@pytest.mark.slow
def test_optuna_sweep_maximises_dev_f1(tiny_teacher):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    root = tiny_teacher.parent
    sweep = root / "optuna"
    run_cli("distill.student", [
        "hparams_search=kd_optuna", f"teacher={tiny_teacher}", "student.depth=1", *SMALL,
        f"kd.cache_dir={root / 'cache'}", f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1",
    ], cwd=root)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == {"kd.alpha", "kd.temperature", "optim.lr"}
    trials = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(2)]
    assert results.best_value == pytest.approx(max(t["dev"]["f1"] for t in trials))
    assert {t["student"]["depth"] for t in trials} == {1}
