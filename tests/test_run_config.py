"""A run's ``.hydra/config.yaml`` says what ran: a student's data and decode settings inherited
from its teacher appear there with their values, not as the nulls that were composed."""

from __future__ import annotations

from omegaconf import OmegaConf

from cli_util import QUIET, call


def test_student_config_file_holds_the_inherited_values(tiny_teacher_ckpt, tmp_path):
    run_dir = tmp_path / "student"
    call("distill.student", f"teacher={tiny_teacher_ckpt}", "student.depth=1", "kd=none",
         "trainer=fast_dev_run", *QUIET, f"hydra.run.dir={run_dir}")
    ran = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    teacher = OmegaConf.load(tiny_teacher_ckpt / ".hydra" / "config.yaml")
    for key in ("dir", "train", "dev", "max_length", "stride", "limit_train", "limit_eval"):
        assert ran.data[key] is not None, key
        assert ran.data[key] == teacher.data[key], key
    assert ran.decode.flat is False and ran.decode.threshold == 0.0
    composed = OmegaConf.load(run_dir / ".hydra" / "config.composed.yaml")
    assert composed.data.dir is None  # what was composed is kept beside it


NOISE = ("litlogger", "exists and is not empty", "LeafSpec", "GPU available", "Seed set to")


def test_a_run_prints_only_our_lines_the_progress_bar_and_real_warnings(tiny_bert, tmp_path):
    from cli_util import run

    run_dir = tmp_path / "teacher"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("a folder that is not empty\n")
    result = run("distill.teacher", f"model.name_or_path={tiny_bert}", "trainer=fast_dev_run",
                 "data.limit_train=20", "data.limit_eval=10", f"hydra.run.dir={run_dir}")
    printed = result.stdout + result.stderr
    assert "[distill][INFO] - dev: F1" in printed  # our lines are still there
    for noise in NOISE:
        assert noise not in printed, f"{noise!r} printed:\n{printed[-3000:]}"


def test_resume_from_the_weights_only_best_checkpoint_is_a_one_line_error(tiny_teacher_ckpt, tmp_path):
    result = call("distill.teacher", f"resume={tiny_teacher_ckpt / 'best.ckpt'}",
                  f"hydra.run.dir={tmp_path / 'again'}", *QUIET, check=False)
    assert result.returncode == 2
    assert result.last_line.startswith(f"error: resume={tiny_teacher_ckpt / 'best.ckpt'}: best.ckpt holds weights only")
