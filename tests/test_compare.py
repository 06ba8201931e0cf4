"""``python -m distill.compare`` on synthetic run folders (no training, no real latency)."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from distill import compare as command
from distill.report import compare
from distill.report.plots import pareto_front

TEACHER_DEV, TEACHER_TEST = 0.90, 0.80


def report(f1: float, em: float = 0.5) -> dict:
    return {"f1": f1, "precision": f1, "recall": f1, "exact_match": em, "documents": 10,
            "per_type": {}}


def write_run(folder: Path, metrics: dict | str | None, log: str | None = None) -> Path:
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    (folder / ".hydra" / "overrides.yaml").write_text("[]\n")
    if metrics is not None:
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        (folder / "metrics.json").write_text(text)
        (folder / "best.ckpt").write_bytes(b"not a real checkpoint")
    if log is not None:
        (folder / "student.log").write_text(log)
    return folder


def teacher_metrics(folder: Path) -> dict:
    return {"model": {"name": "tiny", "layers": 4, "hidden_size": 32, "params": 1_000_000},
            "dev": report(TEACHER_DEV, 0.6), "test": report(TEACHER_TEST, 0.55),
            "train": {"seconds": 1.0, "epochs": 1, "steps": 2, "examples_per_second": 3.0},
            "data": {"name": "sample"}, "checkpoint": str((folder / "best.ckpt").resolve())}


def student_metrics(teacher_ckpt: str, depth: int, pruning: str, alpha: float,
                    dev: float, test: float | None) -> dict:
    metrics = {
        "model": {"name": f"tiny -> {depth} layers", "layers": depth, "hidden_size": 32,
                  "params": 250_000 * depth},
        "dev": report(dev), "train": {"seconds": 1.0}, "data": {"name": "sample"},
        "checkpoint": None,
        # the teacher as evaluated in the student's run (same evaluation data)
        "teacher": {"checkpoint": teacher_ckpt, "model": {"name": "tiny", "layers": 4, "params": 1_000_000},
                    "dev": report(TEACHER_DEV), **({"test": report(TEACHER_TEST)} if test else {})},
        "student": {"depth": depth, "layers": list(range(depth)), "pruning": pruning, "init": "teacher"},
        "kd": {"alpha": alpha, "temperature": 2.0, "loss": "softmax", "beta": 0.0, "cache": True},
    }
    if test is not None:
        metrics["test"] = report(test)
    return metrics


@pytest.fixture()
def runs(tmp_path: Path) -> dict:
    """teacher/ + a nested multirun with 3 students, one failed job, one invalid metrics.json."""
    teacher = tmp_path / "teacher" / "2026-01-01_10-00-00"
    write_run(teacher, teacher_metrics(teacher))
    ckpt = str((teacher / "best.ckpt").resolve())
    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    (sweep).mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    specs = {"0": (2, "uniform", 0.5, 0.85, 0.72), "1": (1, "uniform", 0.5, 0.60, 0.40),
             "3": (2, "bottom", 0.0, 0.70, None)}
    for job, (depth, pruning, alpha, dev, test) in specs.items():
        folder = sweep / job
        m = student_metrics(ckpt, depth, pruning, alpha, dev, test)
        m["checkpoint"] = str((folder / "best.ckpt").resolve())
        write_run(folder, m)
    write_run(sweep / "2", None, log="[2026-01-01 12:00:00,000][distill][ERROR] - teacher: boom\n")
    write_run(tmp_path / "broken", "{not json")
    return {"root": tmp_path, "teacher": teacher, "sweep": sweep, "ckpt": ckpt}


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_compare_without_latency(runs, capsys):
    out = runs["root"] / "report"
    assert command.main([str(runs["teacher"]), str(runs["sweep"].parent.parent), str(runs["root"] / "broken"),
                          "--output", str(out), "--no-latency"]) == 0
    printed = capsys.readouterr()
    # order: teacher first, then depth desc, pruning (uniform before bottom), KD before none
    with open(out / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["teacher 4L", "2L uniform KD", "2L bottom no-KD",
                                         "1L uniform KD"]
    assert [r["role"] for r in rows] == ["teacher", "student", "student", "student"]
    rows = by_name(rows)
    # retention: student test F1 / teacher test F1; dev when the student has no test split
    assert float(rows["2L uniform KD"]["retention_pct"]) == pytest.approx(100 * 0.72 / TEACHER_TEST)
    assert rows["2L uniform KD"]["retention_split"] == "test"
    assert float(rows["1L uniform KD"]["retention_pct"]) == pytest.approx(100 * 0.40 / TEACHER_TEST)
    assert float(rows["2L bottom no-KD"]["retention_pct"]) == pytest.approx(100 * 0.70 / TEACHER_DEV)
    assert rows["2L bottom no-KD"]["retention_split"] == "dev"
    assert rows["2L bottom no-KD"]["kd"] == "none" and rows["2L uniform KD"]["kd_alpha"] == "0.5"
    assert rows["teacher 4L"]["p50_ms"] == "" and rows["2L uniform KD"]["speedup"] == ""
    # the failed job and the invalid metrics.json are reported, not skipped
    md = (out / "comparison.md").read_text()
    assert "## Failed or incomplete runs" in md
    failed_section = md.split("## Failed or incomplete runs")[1]
    assert "12-00-00/2" in failed_section and "teacher: boom" in failed_section
    assert "broken" in failed_section and "not JSON" in failed_section
    assert "warning: failed or incomplete run" in printed.err and printed.err.count("warning:") == 2
    # the markdown table goes to stdout; the depth plot is written, the latency plot is not
    assert "| teacher 4L |" in printed.out and "| 2L uniform KD |" in printed.out
    assert "| 90.00 | 80.00 |" in printed.out  # teacher dev / test F1 in %
    assert (out / "f1_vs_depth.png").stat().st_size > 1000
    assert not (out / "f1_vs_latency.png").exists()


class FakeBench:
    """A stand-in for distill.bench: latency grows with depth (teacher 4 layers)."""

    def __init__(self):
        self.calls = []

    def load_bench_model(self, spec, runtime=None):
        metrics = json.loads((Path(spec).parent / "metrics.json").read_text())
        return types.SimpleNamespace(name=str(spec), runtime=runtime or "torch",
                                     layers=metrics["model"]["layers"])

    def measure(self, models, cases, warmup=3, repeats=20, progress=False):
        self.calls.append({"models": list(models), "cases": list(cases), "repeats": repeats})
        rows = []
        for batch, tokens in cases:  # case-major, as an interleaving bench would
            for m in models:  # an int8 export: 4 times as fast
                ms = 2.0 * m.layers * (1 if batch == 1 else 10) / (4 if m.runtime == "onnx-int8" else 1)
                rows.append({"model": m.name, "runtime": m.runtime, "batch": batch,
                             "tokens": tokens, "p50_ms": ms, "p95_ms": ms * 1.1,
                             "per_second": 1000 * batch / ms})
        return rows


def test_compare_with_latency(runs, monkeypatch, capsys):
    fake = FakeBench()
    monkeypatch.setitem(sys.modules, "distill.report.bench",
                        types.SimpleNamespace(load_bench_model=fake.load_bench_model,
                                              measure=fake.measure))
    # only the sweep is given: its teacher is found through the students' checkpoint path
    assert command.main([str(runs["sweep"]), "--repeats", "2"]) == 0
    assert len(fake.calls) == 1  # all models measured together (interleaved), once
    call = fake.calls[0]
    assert call["cases"] == [(1, 64), (32, 64)] and call["repeats"] == 2 and len(call["models"]) == 4
    result = compare.compare([runs["sweep"]], runs["root"] / "again", repeats=2)
    rows = by_name(result["rows"])
    assert list(rows)[0] == "teacher 4L" and len(rows) == 4  # one teacher row
    assert rows["teacher 4L"]["p50_ms"] == 8.0 and rows["teacher 4L"]["speedup"] == 1.0
    assert rows["2L uniform KD"]["speedup"] == pytest.approx(2.0)
    assert rows["1L uniform KD"]["speedup"] == pytest.approx(4.0)
    assert rows["1L uniform KD"]["throughput_per_s"] == pytest.approx(1000 * 32 / 20)
    for name in ("comparison.md", "comparison.csv", "f1_vs_latency.png", "f1_vs_depth.png"):
        assert (runs["sweep"] / name).stat().st_size > 0
    md = (runs["sweep"] / "comparison.md").read_text()
    assert "4.00×" in md and "![f1_vs_latency.png](f1_vs_latency.png)" in md
    assert "12-00-00/2" in md.split("## Failed or incomplete runs")[1]


def test_int8_exports_are_timed_with_the_checkpoints(runs, monkeypatch):
    """A run with <run>/export/model.int8.onnx is timed twice in the one interleaved measurement:
    its checkpoint and its int8 export; int8 speed-up has int8 on both sides (none without the
    teacher's int8 export); exports=false times the checkpoints alone."""
    fake = FakeBench()
    monkeypatch.setitem(sys.modules, "distill.report.bench",
                        types.SimpleNamespace(load_bench_model=fake.load_bench_model, measure=fake.measure))
    for folder in (runs["teacher"], runs["sweep"] / "0", runs["sweep"] / "1"):
        (folder / "export").mkdir()
        (folder / "export" / "model.int8.onnx").write_bytes(b"not a real model")
    (runs["sweep"] / "3" / "export").mkdir()  # an export folder without an int8 model: not timed
    result = compare.compare([runs["teacher"], runs["sweep"]], runs["root"] / "out", repeats=1, warmup=0)
    models = fake.calls[0]["models"]
    assert len(fake.calls) == 1 and len(models) == 4 + 3
    assert sorted(m.runtime for m in models).count("onnx-int8") == 3
    rows = by_name(result["rows"])
    assert rows["teacher 4L"]["p50_ms"] == 8.0 and rows["teacher 4L"]["int8_p50_ms"] == 2.0
    assert rows["teacher 4L"]["int8_speedup"] == 1.0
    assert rows["2L uniform KD"]["int8_p50_ms"] == 1.0 and rows["2L uniform KD"]["speedup"] == 2.0
    assert rows["2L uniform KD"]["int8_speedup"] == pytest.approx(2.0)
    assert rows["1L uniform KD"]["int8_throughput_per_s"] == pytest.approx(1000 * 32 / 5)
    assert rows["2L bottom no-KD"]["int8_p50_ms"] is None and rows["2L bottom no-KD"]["int8_speedup"] is None
    assert rows["2L bottom no-KD"]["p50_ms"] == 4.0  # its checkpoint still timed
    header = result["table"].splitlines()[0]
    assert header.rstrip(" |").endswith("int8 p50 ms | int8 seq/s | int8 speed-up")
    assert "| 1.00 | 3200.0 | 2.00× |" in result["table"]  # 2L uniform KD, int8
    with open(runs["root"] / "out" / "comparison.csv", newline="") as handle:
        csv_rows = by_name(csv.DictReader(handle))
    assert float(csv_rows["1L uniform KD"]["int8_speedup"]) == pytest.approx(4.0)
    assert "int8 speed-up = the teacher's int8 p50" in (runs["root"] / "out" / "comparison.md").read_text()
    assert (runs["root"] / "out" / "f1_vs_latency.png").stat().st_size > 1000
    # without the teacher's int8 export, no int8 speed-up (never int8 against PyTorch)
    (runs["teacher"] / "export" / "model.int8.onnx").unlink()
    again = by_name(compare.compare([runs["teacher"], runs["sweep"]], runs["root"] / "again",
                                    repeats=1, warmup=0)["rows"])
    assert again["2L uniform KD"]["int8_p50_ms"] == 1.0 and again["2L uniform KD"]["int8_speedup"] is None
    off = compare.compare([runs["teacher"], runs["sweep"]], runs["root"] / "off", repeats=1, warmup=0,
                          exports=False)
    assert len(fake.calls[-1]["models"]) == 4 and "int8 p50" not in off["table"]


def test_teacher_from_student_record_and_dedupe(runs):
    # the teacher's run folder is gone: its row comes from the students' record of it (once)
    for path in runs["teacher"].iterdir():
        if path.is_file():
            path.unlink()
    result = compare.compare([runs["sweep"]], latency=False)
    teachers = [r for r in result["rows"] if r["role"] == "teacher"]
    assert len(teachers) == 1 and teachers[0]["test_f1"] == TEACHER_TEST
    assert teachers[0]["note"] == "teacher from student"


def test_no_run_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert command.main([str(tmp_path / "empty"), "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no run found") and "\n" not in err
    assert command.main([str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    write_run(tmp_path / "only_failed", None)
    assert command.main([str(tmp_path / "only_failed"), "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert "1 failed or incomplete" in err and "warning: failed or incomplete run" in err


def test_failed_job_error_file(runs):
    """A failed sweep job writes its one-line error to error.txt: that is the reason listed."""
    job = runs["sweep"] / "6"
    (job / ".hydra").mkdir(parents=True)
    (job / "error.txt").write_text("error: student: teacher checkpoint not found\n")
    result = compare.compare([runs["sweep"]], latency=False)
    reason = next(f.reason for f in result["failed"] if f.path.name == "6")
    assert reason.endswith("last error: student: teacher checkpoint not found")
    failed_section = (runs["sweep"] / "comparison.md").read_text().split("## Failed or incomplete runs")[1]
    assert "12-00-00/6" in failed_section and "teacher checkpoint not found" in failed_section


def test_pareto_front():
    points = [(10.0, 90.0), (5.0, 85.0), (6.0, 80.0), (2.0, 60.0), (12.0, 89.0)]
    assert pareto_front(points) == [3, 1, 0]


def test_kd_gain_is_against_the_same_student_without_kd(runs):
    rows = by_name(compare.compare([runs["root"]], latency=False)["rows"])
    kd2 = next(r for r in rows.values() if r["depth"] == 2 and r["kd"] == "KD")
    # the no-KD job keeps the same layers (0, 1) but has no test split: the gain falls back to dev
    assert kd2["kd_gain_split"] == "dev" and kd2["kd_gain"] == pytest.approx(100 * (0.85 - 0.70))
    kd1 = next(r for r in rows.values() if r["depth"] == 1)
    assert kd1["kd_gain"] is None  # no depth-1 student without KD to compare with
    assert all(r["kd_gain"] is None for r in rows.values() if r["kd"] != "KD")
    table = (runs["root"] / "comparison.md").read_text()
    assert "| +15.00 (dev) |" in table


def test_students_with_extra_training_data_are_named_and_compared_like_for_like(runs):
    """A no-KD student with more gold data is no baseline for a KD student on the dataset alone;
    a KD student with KD-only text is compared with the plain no-KD student."""
    sweep = runs["sweep"]
    gold = student_metrics(runs["ckpt"], 2, "bottom", 0.0, 0.90, None)
    gold["data"]["extra_train"] = ["aug/swap.jsonl"]
    gold["checkpoint"] = str((sweep / "4" / "best.ckpt").resolve())
    write_run(sweep / "4", gold)
    # written before metrics.json recorded the extras: the Hydra config says it
    text = student_metrics(runs["ckpt"], 2, "bottom", 0.5, 0.80, None)
    text["checkpoint"] = str((sweep / "5" / "best.ckpt").resolve())
    write_run(sweep / "5", text)
    (sweep / "5" / ".hydra" / "config.yaml").write_text("data:\n  unlabeled: aug/swap.jsonl\n")
    rows = by_name(compare.compare([runs["root"]], latency=False)["rows"])
    assert rows["2L bottom no-KD +swap (gold)"]["extra_train"] == "aug/swap.jsonl"
    with_text = rows["2L bottom KD +swap (KD text)"]
    assert with_text["unlabeled"] == "aug/swap.jsonl"
    # against the plain no-KD job (dev 0.70), not the mean with the extra-gold one (0.90)
    assert with_text["kd_gain"] == pytest.approx(100 * (0.80 - 0.70))


def seeded_student(folder: Path, ckpt: str, alpha: float, dev: float, test: float,
                   seed: int | None, depth: int = 3) -> Path:
    metrics = student_metrics(ckpt, depth, "uniform", alpha, dev, test)
    metrics["checkpoint"] = str((folder / "best.ckpt").resolve())
    if seed is not None:
        metrics["seed"] = seed
    return write_run(folder, metrics)


def test_seeds_of_one_configuration_are_one_row_of_means(runs):
    """Two seeds of a KD student and two of its no-KD twin: one row each (mean ± half the range),
    the KD gain on the means; every run stays in the CSV with its seed; a single seed is as before."""
    sweep = runs["root"] / "seeds"
    for job, alpha, dev, test, seed in (("kd1", 0.5, 0.80, 0.70, 1), ("kd42", 0.5, 0.82, 0.74, 42),
                                        ("none1", 0.0, 0.75, 0.66, 1), ("none42", 0.0, 0.76, 0.68, 42)):
        seeded_student(sweep / job, runs["ckpt"], alpha, dev, test, seed if job != "kd42" else None)
    # written before metrics.json recorded the seed: the Hydra config says it
    (sweep / "kd42" / ".hydra" / "config.yaml").write_text("seed: 42\ndata:\n  name: sample\n")
    seeded_student(sweep / "one", runs["ckpt"], 0.5, 0.60, 0.50, 7, depth=1)
    # the same seed twice is no pair of seeds (some other setting differs): each stays a row
    for job in ("again_a", "again_b"):
        seeded_student(sweep / job, runs["ckpt"], 0.0, 0.50, 0.40, 3, depth=1)
    out = runs["root"] / "report"
    result = compare.compare([runs["teacher"], sweep], out, latency=False)

    shown = by_name(result["table_rows"])
    assert list(shown) == ["teacher 4L", "3L uniform KD", "3L uniform no-KD", "1L uniform KD",
                           "1L uniform no-KD (again_a)", "1L uniform no-KD (again_b)"]
    kd, none = shown["3L uniform KD"], shown["3L uniform no-KD"]
    assert kd["seeds"] == "1;42" and kd["note"] == "mean of 2 seeds" and kd["params"] == 750_000
    assert kd["test_f1"] == pytest.approx(0.72) and kd["test_f1_spread"] == pytest.approx(0.02)
    assert none["dev_f1"] == pytest.approx(0.755) and none["dev_f1_spread"] == pytest.approx(0.005)
    assert kd["retention_pct"] == pytest.approx(90.0) and kd["retention_pct_spread"] == pytest.approx(2.5)
    # the gain on the means (72 - 67), ± the sum of both half-ranges (2 + 1)
    assert kd["kd_gain"] == pytest.approx(5.0) and kd["kd_gain_spread"] == pytest.approx(3.0)
    assert kd["kd_gain_split"] == "test" and none["kd_gain"] is None

    rows = by_name(result["rows"])
    assert rows["3L uniform KD seed=42"]["seed"] == 42
    assert rows["3L uniform KD seed=1"]["kd_gain"] == pytest.approx(3.0)  # 70 - mean 67
    single = rows["1L uniform KD"]
    # against the mean of two no-KD runs of one seed (no seed spread): as before, no ±
    assert single["seed"] == 7 and single["seeds"] is None and single["kd_gain_spread"] is None
    assert single["kd_gain"] == pytest.approx(100 * (0.50 - 0.40))

    md = (out / "comparison.md").read_text()
    assert "seeds/{kd1,kd42}` | n=2: 1, 42 | student |" in md
    assert "| 81.00 ± 1.00 | 72.00 ± 2.00 | 50.00 ± 0.00 | 90.0 ± 2.5 | +5.00 ± 3.00 |" in md
    assert "| 75.50 ± 0.50 | 67.00 ± 1.00 |" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| 1L uniform KD |"))
    assert "| 7 |" in line and "±" not in line  # one seed: as before, its seed shown
    assert "half their range" in md and "2 configurations trained with several seeds" in md

    with open(out / "comparison.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [r["name"] for r in csv_rows][1:4] == ["3L uniform KD seed=1", "3L uniform KD seed=42",
                                                  "3L uniform KD"]
    group = csv_rows[3]
    assert group["role"] == "student" and group["seeds"] == "1;42" and group["seed"] == ""
    assert group["note"] == "mean of 2 seeds" and float(group["kd_gain_spread"]) == pytest.approx(3.0)
    assert csv_rows[1]["seed"] == "1" and len(csv_rows) == 1 + 4 + 2 + 3
    assert (out / "f1_vs_depth.png").stat().st_size > 1000


def test_unlabeled_text_recorded_as_read_transfer_counts(runs):
    """data.unlabeled as read_transfer's record (files, documents, windows ...): named by its
    files' basenames, and compared with the plain no-KD student."""
    folder = runs["sweep"] / "7"
    metrics = student_metrics(runs["ckpt"], 2, "bottom", 0.5, 0.78, None)
    metrics["checkpoint"] = str((folder / "best.ckpt").resolve())
    metrics["data"]["unlabeled"] = {"files": ["/corpus/reuters/part1.txt", "/corpus/reuters/part2.txt"],
                                    "documents": 40, "windows": 52, "dropped_eval_duplicates": 2}
    write_run(folder, metrics)
    rows = by_name(compare.compare([runs["root"]], latency=False)["rows"])
    row = rows["2L bottom KD +part1 (KD text) +part2 (KD text)"]
    assert row["unlabeled"] == "part1.txt;part2.txt"
    assert row["kd_gain"] == pytest.approx(100 * (0.78 - 0.70)) and row["kd_gain_spread"] is None


def test_seed_rows_latency_is_the_mean_of_their_models(runs, monkeypatch):
    fake = FakeBench()
    monkeypatch.setitem(sys.modules, "distill.report.bench",
                        types.SimpleNamespace(load_bench_model=fake.load_bench_model, measure=fake.measure))
    sweep = runs["root"] / "seeds"
    seeded_student(sweep / "a", runs["ckpt"], 0.5, 0.80, 0.70, 1)
    seeded_student(sweep / "b", runs["ckpt"], 0.5, 0.84, 0.74, 2)
    result = compare.compare([runs["teacher"], sweep], runs["root"] / "out", repeats=1, warmup=0)
    assert len(fake.calls[0]["models"]) == 3  # every run is measured
    group = by_name(result["table_rows"])["3L uniform KD"]
    assert group["p50_ms"] == pytest.approx(6.0) and group["speedup"] == pytest.approx(8.0 / 6.0)
    assert (runs["root"] / "out" / "f1_vs_latency.png").stat().st_size > 1000


def test_kd_gain_takes_the_no_kd_schedule_best_on_dev():
    """A no-KD twin trained for several schedules (epochs): the KD gain is measured against the
    one best on dev, not the mean of all (a gain must not be just a longer schedule)."""
    from distill.report.runs import COLUMNS, add_kd_gains

    def row(kd, epochs, dev, test, seed=1):
        r = {c: None for c in COLUMNS}
        r.update(role="student", kd=kd, epochs=epochs, dev_f1=dev, test_f1=test, seed=seed,
                 teacher_checkpoint="t", data="d", layers="0,1", init="teacher")
        return r

    kd = row("KD", 2, 0.86, 0.83)
    rows = [kd, row("none", 10, 0.85, 0.82), row("none", 20, 0.84, 0.80), row("none", 2, 0.80, 0.78)]
    add_kd_gains(rows)
    assert kd["kd_gain"] == pytest.approx(1.0) and kd["kd_gain_split"] == "test"


def test_schedules_of_one_student_are_named_by_their_epochs(runs):
    """Two configurations that differ only in their schedule (e.g. the gold-only twin run 4 and
    10 epochs) are named by it, not by their run folders; seeds of one schedule stay one row."""
    for epochs, dev, runs_of in ((4, 0.80, ("g4_s1", "g4_s2")), (10, 0.82, ("g10_s1", "g10_s2"))):
        for seed, name in enumerate(runs_of, start=1):
            folder = seeded_student(runs["root"] / "sched" / name, runs["ckpt"], 0.0, dev, 0.78, seed)
            metrics = json.loads((folder / "metrics.json").read_text())
            metrics["train"]["epochs"] = epochs
            write_run(folder, metrics)
    result = compare.compare([runs["root"] / "sched"], runs["root"] / "sched_out", latency=False)
    groups = {r["group"] for r in result["rows"] if r["role"] == "student"}
    assert groups == {"3L uniform no-KD 4 ep", "3L uniform no-KD 10 ep"}, groups


def test_int8_f1_of_exported_students_is_a_column(runs):
    """A run with an int8 export (its parity.json) shows int8 − fp32 F1 in the table and CSV;
    runs without one leave it empty; the column is absent when no run has one."""
    from distill.report.compare import compare

    folder = runs["sweep"] / "0"
    (folder / "export").mkdir()
    (folder / "export" / "parity.json").write_text(json.dumps(
        {"onnx": {"f1": 0.85}, "onnx-int8": {"f1": 0.8465, "f1_fp32": 0.85, "f1_diff": -0.0035}}))
    result = compare([runs["teacher"], runs["sweep"]], runs["root"] / "report", latency=False)
    rows = by_name(result["rows"])
    assert rows["2L uniform KD"]["int8_f1_diff"] == pytest.approx(-0.35)
    assert rows["2L bottom no-KD"]["int8_f1_diff"] is None
    header, _, first, *_ = result["table"].splitlines()
    assert header.rstrip(" |").endswith("int8 ΔF1")
    line = next(l for l in result["table"].splitlines() if l.startswith("| 2L uniform KD"))
    assert line.rstrip(" |").endswith("-0.35")
    with open(runs["root"] / "report" / "comparison.csv", newline="") as handle:
        csv_rows = {r["name"]: r for r in csv.DictReader(handle)}
    assert float(csv_rows["2L uniform KD"]["int8_f1_diff"]) == pytest.approx(-0.35)
    (folder / "export" / "parity.json").unlink()
    again = compare([runs["teacher"], runs["sweep"]], runs["root"] / "report2", latency=False)
    assert "int8" not in again["table"].splitlines()[0]


def transfer_student(folder: Path, ckpt: str, documents: int, dev: float, *, alpha: float = 0.5,
                     pseudo_labels: bool = False, files: tuple = ("corpus/news.txt",)) -> Path:
    """A 2-layer bottom student distilled with ``documents`` transfer texts of ``files``."""
    metrics = student_metrics(ckpt, 2, "bottom", alpha, dev, None)
    metrics["checkpoint"] = str((folder / "best.ckpt").resolve())
    metrics["kd"]["pseudo_labels"] = pseudo_labels
    metrics["data"]["unlabeled"] = {"spec": list(files) if len(files) > 1 else files[0], "files": list(files),
                                    "documents": documents, "windows": documents}
    return write_run(folder, metrics)


def test_hard_label_students_are_distilled_students_not_gold_only_twins(runs):
    """kd.alpha=0 with kd.pseudo_labels=true learns from the teacher's decoded spans: a KD student
    ("KD hard", "hard labels"), compared with the gold-only twin and never taken as one (it was
    the no-KD baseline of every soft student before, being the best on dev)."""
    sweep = runs["sweep"]
    transfer_student(sweep / "hard", runs["ckpt"], 500, 0.95, alpha=0.0, pseudo_labels=True)
    transfer_student(sweep / "soft", runs["ckpt"], 500, 0.80)
    rows = by_name(compare.compare([runs["root"]], latency=False)["rows"])
    hard, soft = rows["2L bottom KD hard +news (KD text)"], rows["2L bottom KD +news (KD text)"]
    assert hard["kd"] == "KD" and hard["kd_labels"] == "hard" and soft["kd_labels"] == "soft"
    # both against the gold-only job "3" (dev 0.70, no test split)
    assert hard["kd_gain"] == pytest.approx(100 * (0.95 - 0.70)) and hard["kd_gain_split"] == "dev"
    assert soft["kd_gain"] == pytest.approx(100 * (0.80 - 0.70))
    line = next(ln for ln in (runs["root"] / "comparison.md").read_text().splitlines()
                if ln.startswith("| 2L bottom KD hard "))
    assert "| hard labels |" in line


def test_amount_of_transfer_text_names_runs_and_is_plotted(runs):
    """Students that differ only in how many transfer documents they read (data.limit_unlabeled)
    are told apart by the count, not grouped as seeds; f1_vs_transfer.png draws F1 against the
    amount, from the gold-only twin at 0; without two amounts there is no such plot."""
    out = runs["root"] / "one"
    transfer_student(runs["sweep"] / "t100", runs["ckpt"], 100, 0.75)
    compare.compare([runs["root"]], out, latency=False)
    assert (out / "f1_vs_transfer.png").is_file()  # 0 (the gold-only job "3") and 100

    solo = runs["root"] / "solo"
    transfer_student(solo / "t100", runs["ckpt"], 100, 0.75)
    result = compare.compare([solo], solo / "out", latency=False)  # no gold-only twin: one amount
    assert "f1_vs_transfer.png" not in result["files"] and not (solo / "out" / "f1_vs_transfer.png").exists()

    for n, dev in ((1000, 0.78), (5000, 0.81)):
        transfer_student(runs["sweep"] / f"t{n}", runs["ckpt"], n, dev)
    # more text on top, from a second source: a point of the same line, named by its sources
    transfer_student(runs["sweep"] / "t20000", runs["ckpt"], 20000, 0.83,
                     files=("corpus/news.txt", "corpus/wire.txt"))
    out = runs["root"] / "many"
    result = compare.compare([runs["root"]], out, latency=False)
    rows = by_name(result["rows"])
    assert rows["2L bottom KD +news (KD text) (5000 docs)"]["transfer_documents"] == 5000
    assert rows["2L bottom KD +news (KD text) +wire (KD text)"]["transfer_documents"] == 20000
    assert rows["2L bottom KD +news (KD text) (100 docs)"]["kd_gain"] == pytest.approx(100 * (0.75 - 0.70))
    assert (out / "f1_vs_transfer.png").stat().st_size > 1000 and "f1_vs_transfer.png" in result["files"]
    with open(out / "comparison.csv", newline="") as handle:
        counts = {r["name"]: r["transfer_documents"] for r in csv.DictReader(handle)}
    assert counts["2L bottom KD +news (KD text) (1000 docs)"] == "1000" and counts["teacher 4L"] == ""


def test_a_teacher_its_gold_only_student_beats_on_dev_is_flagged(runs, capsys):
    from distill.report.compare import compare

    sweep, ckpt = runs["sweep"], runs["ckpt"]
    folder = sweep / "9"
    m = student_metrics(ckpt, 2, "bottom", 0.0, TEACHER_DEV - 0.01, None)
    m["checkpoint"] = str((folder / "best.ckpt").resolve())
    write_run(folder, m)
    result = compare([runs["teacher"], sweep], runs["root"] / "r1", latency=False)
    assert "may be undertrained" not in result["files"]["md"].read_text()
    m["dev"] = report(TEACHER_DEV + 0.01)
    write_run(folder, m)
    result = compare([runs["teacher"], sweep], runs["root"] / "r2", latency=False)
    text = result["files"]["md"].read_text()
    assert "teacher 4L may be undertrained: 2L bottom no-KD" in text
    assert f"{100 * (TEACHER_DEV + 0.01):.2f} dev F1 against its {100 * TEACHER_DEV:.2f}" in text
    assert "may be undertrained" in capsys.readouterr().err


def test_width_pruned_students_are_their_own_configurations(runs):
    """Narrow students (student.heads / student.ffn) are named by their width, their KD gain is
    against the narrow student of the same width trained without KD (not the full-width one), and
    two importances of one width are two configurations, not two seeds of one."""
    sweep = runs["root"] / "narrow"
    for job, alpha, dev, test, seed, width in (
            ("full_none", 0.0, 0.80, 0.76, 1, None), ("full_none42", 0.0, 0.80, 0.76, 42, None),
            ("h1_kd", 0.5, 0.78, 0.70, 1, {"heads": 1, "ffn": 16, "importance": "gradient"}),
            ("h1_kd42", 0.5, 0.78, 0.72, 42, {"heads": 1, "ffn": 16, "importance": "gradient"}),
            ("h1_none", 0.0, 0.70, 0.66, 1, {"heads": 1, "ffn": 16, "importance": "gradient"}),
            ("h1_none42", 0.0, 0.70, 0.66, 42, {"heads": 1, "ffn": 16, "importance": "gradient"}),
            ("h1_mag", 0.0, 0.60, 0.50, 1, {"heads": 1, "ffn": 16, "importance": "magnitude"}),
            ("h1_mag42", 0.0, 0.60, 0.52, 42, {"heads": 1, "ffn": 16, "importance": "magnitude"})):
        folder = seeded_student(sweep / job, runs["ckpt"], alpha, dev, test, seed)
        if width:
            m = json.loads((folder / "metrics.json").read_text())
            m["student"].update(width, params=123_000)
            (folder / "metrics.json").write_text(json.dumps(m))
    result = compare.compare([runs["teacher"], sweep], sweep, latency=False)
    shown = by_name(result["table_rows"])
    assert set(shown) == {"teacher 4L", "3L uniform no-KD", "3L uniform h1 ffn16 KD",
                          "3L uniform h1 ffn16 no-KD", "3L uniform h1 ffn16 magnitude no-KD"}
    assert shown["3L uniform h1 ffn16 KD"]["kd_gain"] == pytest.approx(100 * (0.71 - 0.66))
    assert shown["3L uniform h1 ffn16 magnitude no-KD"]["seeds"] == "1;42"
    # parameters without the zeroed heads (student.params), not the checkpoint's tensor sizes
    assert shown["3L uniform h1 ffn16 KD"]["params"] == 123_000 and shown["3L uniform no-KD"]["params"] == 750_000
    with open(sweep / "comparison.csv", newline="") as handle:
        widths = {r["name"]: r["width"] for r in csv.DictReader(handle)}
    assert widths["3L uniform h1 ffn16 magnitude no-KD"] == "h1 ffn16 magnitude"
    assert widths["3L uniform no-KD"] == ""
