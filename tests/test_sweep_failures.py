"""One failing job does not end a sweep: the failure is recorded in its run dir (``error.txt``),
the other jobs run, and the sweep's exit status says that some failed."""

from __future__ import annotations

import json

from cli_util import QUIET, run


def test_a_failing_job_does_not_end_the_sweep(tiny_teacher_ckpt, tmp_path):
    sweep = tmp_path / "sweep"
    # job 0 fails inside the task (a student deeper than its 2-layer teacher), job 1 must still run
    result = run("distill.student", "-m", f"teacher={tiny_teacher_ckpt}", "student.depth=5,1",
                 "trainer=fast_dev_run", "data.limit_train=20", "data.limit_eval=10", *QUIET,
                 f"kd.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    failed, done = sweep / "0", sweep / "1"
    error = (failed / "error.txt").read_text(encoding="utf-8").strip()
    assert "student.depth=5" in error and "\n" not in error
    assert not (failed / "metrics.json").exists()
    assert json.loads((done / "metrics.json").read_text())["student"]["depth"] == 1
    assert result.last_line.startswith("error: sweep: a job failed (student.depth=5")
    assert "Traceback" not in result.stderr
