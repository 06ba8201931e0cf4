import copy
import json

import pytest
import torch

from conftest import SAMPLE
from distill.data.datamodule import NERDataModule
from distill.model.encoders import load_encoder, load_tokenizer
from distill.errors import ConfigError
from distill.train.kd_cache import TeacherCache
from distill.train.losses import kd_softmax_kl, multilabel_categorical_crossentropy
from distill.model.span_ner import SpanNER, encoder_layers, span_mask
from distill.train.module import NERModule
from distill.train.students import build_student, select_layers
from test_teacher import run_cli


def test_select_layers_strategies_and_validation():
    assert select_layers(12, 4, "uniform") == [2, 5, 8, 11]
    assert select_layers(12, 6, "uniform") == [1, 3, 5, 7, 9, 11]
    assert select_layers(6, 6, "uniform") == list(range(6))
    assert select_layers(6, 1, "uniform") == [5]
    assert select_layers(12, 4, "bottom") == [0, 1, 2, 3]
    assert select_layers(12, 4, "top") == [8, 9, 10, 11]
    assert select_layers(6, layers=[0, 2, 5]) == [0, 2, 5]
    for bad in ([0, 6], [2, 1], [1, 1], [], [-1, 2]):
        with pytest.raises(ConfigError, match="student.layers"):
            select_layers(6, layers=bad)
    with pytest.raises(ConfigError, match="larger than the teacher's 6 layers"):
        select_layers(6, 7, "uniform")
    with pytest.raises(ConfigError, match="student.pruning"):
        select_layers(6, 2, "middle")


@pytest.fixture(scope="module")
def setup(tiny_bert4):
    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(tiny_bert4))
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=24, limit_eval=8,
                       batch_size=8, max_length=48, stride=12)
    labels = dm.read()
    dm.encode(tokenizer)
    teacher = SpanNER(load_encoder(str(tiny_bert4)), labels).eval()
    batch = dm.dataset("train").collate(list(range(8)))
    return dm, tokenizer, teacher, batch


def test_pruning_copies_exactly_the_requested_layers(setup):
    _, _, teacher, _ = setup
    student = build_student(teacher, [0, 3], "teacher")
    t_layers, s_layers = encoder_layers(teacher.encoder), encoder_layers(student.encoder)
    assert len(s_layers) == 2 and student.encoder.config.num_hidden_layers == 2
    for s_idx, t_idx in enumerate([0, 3]):
        for (name, p), (_, q) in zip(s_layers[s_idx].named_parameters(), t_layers[t_idx].named_parameters()):
            assert torch.equal(p, q), name
        assert s_layers[s_idx].state_dict().keys() == t_layers[t_idx].state_dict().keys()
    assert torch.equal(student.head.qk.weight, teacher.head.qk.weight)
    assert student.head.qk.weight.data_ptr() != teacher.head.qk.weight.data_ptr()  # a copy
    assert len(encoder_layers(teacher.encoder)) == 4  # the teacher is untouched


def test_full_depth_student_reproduces_teacher_and_has_zero_kd(setup):
    _, _, teacher, batch = setup
    student = build_student(teacher, [0, 1, 2, 3], "teacher").eval()
    args = (batch["input_ids"], batch["attention_mask"], batch["content_mask"])
    with torch.no_grad():
        s, t = student(*args), teacher(*args)
    assert torch.equal(s, t)
    assert kd_softmax_kl(s, t, span_mask(batch["content_mask"]), 2.0).item() == pytest.approx(0, abs=1e-6)


def _module(setup, alpha, layers=(1, 3), cache=None):
    dm, tokenizer, teacher, _ = setup
    torch.manual_seed(0)
    student = build_student(teacher, list(layers), "teacher")
    student.dropout.p = 0.0
    for m in student.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    kd = {"alpha": alpha, "temperature": 2.0, "loss": "softmax", "beta": 0.0}
    return NERModule(student, tokenizer, dm.config(), {"lr": 1e-3}, {"threshold": 0.0},
                     kd=kd, teacher=teacher, teacher_cache=cache)


def test_gradients_reach_the_student_only(setup):
    module = _module(setup, 0.7)
    loss = module.training_step(setup[3], 0)
    loss.backward()
    assert all(p.grad is None for p in setup[2].parameters())
    grads = [p.grad for p in module.model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_alpha_zero_equals_plain_training(setup):
    batch = setup[3]
    distilled = _module(setup, 0.0).training_step(batch, 0)
    plain = _module(setup, 0.0)
    plain._teacher = []
    expected = multilabel_categorical_crossentropy(plain(batch), batch["targets"],
                                                   span_mask(batch["content_mask"]), batch["labeled"])
    assert torch.equal(distilled, plain.training_step(batch, 0))
    assert torch.allclose(distilled, expected)


def test_loss_is_the_documented_mixture(setup):
    batch = setup[3]
    module = _module(setup, 0.25)
    with torch.no_grad():
        s = module(batch)
        t = setup[2](batch["input_ids"], batch["attention_mask"], batch["content_mask"])
        valid = span_mask(batch["content_mask"])
        expected = 0.25 * kd_softmax_kl(s, t, valid, 2.0) + 0.75 * multilabel_categorical_crossentropy(
            s, batch["targets"], valid, batch["labeled"])
        assert torch.allclose(module.training_step(batch, 0), expected)


def test_cache_returns_the_live_teachers_logits(setup, tmp_path):
    dm, _, teacher, _ = setup
    cache = TeacherCache(tmp_path / "cache", teacher, dm.dataset("train"), batch_size=5)
    cache.prepare(teacher, "cpu")
    assert cache.complete() and cache.path.is_dir()
    ids = [3, 0, 17, 9]
    batch = dm.dataset("train").collate(ids)
    with torch.no_grad():
        live = teacher(batch["input_ids"], batch["attention_mask"], batch["content_mask"])
    cached = cache.batch(batch["window_ids"], batch["input_ids"].shape[1])
    finite = torch.isfinite(live)
    assert torch.equal(finite, torch.isfinite(cached))
    assert torch.allclose(live[finite], cached[finite], atol=1e-2, rtol=1e-3)  # fp16 storage
    # The same data and teacher give the same file; another teacher another one.
    again = TeacherCache(tmp_path / "cache", teacher, dm.dataset("train"))
    assert again.path == cache.path
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1.0
    assert TeacherCache(tmp_path / "cache", other, dm.dataset("train")).path != cache.path


@pytest.fixture(scope="module")
def teacher4_run(tiny_bert4, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher4")
    run_cli("distill.teacher", f"model.name_or_path={tiny_bert4}", "trainer=fast_dev_run",
            "data.limit_train=40", "data.limit_eval=16", f"hydra.run.dir={run_dir}")
    return run_dir


def test_student_cli_end_to_end(teacher4_run, tmp_path):
    run_dir = tmp_path / "student"
    run_cli("distill.student", f"teacher={teacher4_run / 'best.ckpt'}", "student.depth=2",
            "student.pruning=bottom", "trainer=fast_dev_run", "data.limit_eval=16",
            f"kd.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run_dir}")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["student"] == {"depth": 2, "layers": [0, 1], "pruning": "bottom", "init": "teacher"}
    assert m["model"]["layers"] == 2 and m["teacher"]["model"]["layers"] == 4
    # The teacher is measured in this run, on the same evaluation data as the student.
    assert m["teacher"]["dev"]["documents"] == m["dev"]["documents"] == 16
    # ... and the student trains on the teacher's documents: its data.limit_train=40 is inherited.
    teacher_m = json.loads((teacher4_run / "metrics.json").read_text())
    assert m["data"]["limit_train"] == 40
    assert m["data"]["alignment"]["train"] == teacher_m["data"]["alignment"]["train"]
    assert m["retention"]["dev"] == pytest.approx(m["dev"]["f1"] / m["teacher"]["dev"]["f1"])
    assert m["kd"]["alpha"] == 0.5 and (run_dir / "best.ckpt").is_file()
    assert list((tmp_path / "cache").glob("*.store"))


def test_teacher_metrics_are_measured_once_per_evaluation_data(teacher4_run, tmp_path):
    cache = tmp_path / "cache"
    common = (f"teacher={teacher4_run}", "student.depth=2", "trainer=fast_dev_run",
              f"kd.cache_dir={cache}")

    def student(name, *overrides):
        run_cli("distill.student", *common, *overrides, f"hydra.run.dir={tmp_path / name}")
        return json.loads((tmp_path / name / "metrics.json").read_text())["teacher"]

    first = student("a", "data.limit_eval=16")
    assert first["from_cache"] is False
    [entry] = cache.glob("*.teacher_eval.json")
    assert json.loads(entry.read_text())["dev"] == first["dev"]
    # A later student on the same evaluation data reads the entry (kd=none too) ...
    again = json.loads(entry.read_text())
    again["dev"]["f1"] = 0.123  # a value no evaluation gave: proves the entry is what is read
    entry.write_text(json.dumps(again))
    second = student("b", "data.limit_eval=16", "kd=none")
    assert second["from_cache"] is True and second["dev"]["f1"] == 0.123
    assert second["test"] == first["test"] and second["checkpoint"] == first["checkpoint"]
    # ... other evaluation data is measured again, and kd.cache=false never reads an entry.
    third = student("c", "data.limit_eval=8")
    assert third["from_cache"] is False and third["dev"]["documents"] == 8
    assert len(list(cache.glob("*.teacher_eval.json"))) == 2
    fourth = student("d", "data.limit_eval=16", "kd.cache=false")
    assert fourth["from_cache"] is False and fourth["dev"] == first["dev"]


@pytest.mark.parametrize("overrides, message", [
    ([], "teacher: required"),
    (["teacher=/nonexistent/best.ckpt"], "no such checkpoint"),
    (["student.depth=5"], "larger than the teacher's 4 layers"),
    (["student.layers=[0,4]"], "indices must be in 0..3"),
    (["student.layers=[2,1]"], "strictly increasing"),
])
def test_student_cli_errors(teacher4_run, tmp_path, overrides, message):
    if overrides and overrides[0].startswith("teacher="):
        args = overrides
    else:
        args = ([f"teacher={teacher4_run}"] if overrides else []) + overrides
    result = run_cli("distill.student", *args, "trainer=fast_dev_run",
                     f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last, result.stderr[-2000:]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_hidden_state_matching_uses_the_copied_layers(setup):
    dm, tokenizer, teacher, batch = setup
    student = build_student(teacher, [1, 3], "teacher")
    kd = {"alpha": 0.5, "temperature": 1.0, "loss": "softmax", "beta": 1.0}
    module = NERModule(student, tokenizer, dm.config(), {"lr": 1e-3}, {"threshold": 0.0}, kd=kd,
                       teacher=teacher, layer_map=[1, 3])
    module.eval()  # no dropout: copied layers reproduce the teacher's hidden states
    loss = module.training_step(batch, 0)
    # Student layer k equals teacher layer layer_map[k] only for k = 0 (layer 1 sees layer 0's
    # output in the teacher but the embeddings in the student), so the loss is positive and finite.
    assert torch.isfinite(loss) and loss > 0
    with torch.no_grad():
        _, s_hidden = student(batch["input_ids"], batch["attention_mask"], batch["content_mask"], True)
        _, t_hidden = teacher(batch["input_ids"], batch["attention_mask"], batch["content_mask"], True)
    assert torch.equal(s_hidden[0], t_hidden[0])  # shared embeddings


def test_unlabeled_text_adds_kd_only_examples(setup, tmp_path):
    _, tokenizer, teacher, _ = setup
    (tmp_path / "raw.txt").write_text("Anna Berg flew to Lisbon .\nThe Lisbon Titans won .\n")
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=4, limit_eval=2,
                       unlabeled=str(tmp_path / "raw.txt"), max_length=48, stride=12)
    dm.read(labels=teacher.labels)
    dm.encode(tokenizer)
    train = dm.dataset("train")
    assert len(train) == 6 and [w.labeled for w in train.windows] == [True] * 4 + [False] * 2
    batch = train.collate([0, 4, 5])
    assert batch["labeled"].tolist() == [True, False, False] and not batch["targets"][1:].any()
    student = build_student(teacher, [1, 3], "teacher")
    module = NERModule(student, tokenizer, dm.config(), {"lr": 1e-3}, {"threshold": 0.0},
                       kd={"alpha": 0.5, "temperature": 1.0}, teacher=teacher)
    module.eval()
    with torch.no_grad():
        s = module(batch)
        valid = span_mask(batch["content_mask"])
        gold_only_labeled = multilabel_categorical_crossentropy(s[:1], batch["targets"][:1], valid[:1])
        t = teacher(batch["input_ids"], batch["attention_mask"], batch["content_mask"])
        expected = 0.5 * kd_softmax_kl(s, t, valid) + 0.5 * gold_only_labeled
        assert torch.allclose(module.training_step(batch, 0), expected, atol=1e-6)
