"""distill.augment: mention replacement (offsets, pool, nested documents, seed) and the command."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from cli_util import call
from conftest import REPO, SAMPLE, require_shared
from distill.data.augment import mention_pool, mention_swap
from distill.data.datamodule import NERDataModule
from distill.data.document import Document, Entity
from distill.data.readers import read_jsonl, read_split, write_jsonl
from distill.errors import ConfigError, DataError
from distill.student import student_datamodule


def doc(text: str, *mentions: tuple[str, str]) -> Document:
    """A document with the first occurrence of each (surface, type) as an entity."""
    entities = []
    for surface, type_ in mentions:
        start = text.index(surface)
        entities.append(Entity(start, start + len(surface), type_))
    return Document(text, entities, "test")


DOCS = [
    doc("EU rejects German call to boycott British lamb .", ("EU", "ORG"), ("German", "MISC"),
        ("British", "MISC")),
    doc("Peter Blackburn reported from Brussels .", ("Peter Blackburn", "PER"), ("Brussels", "LOC")),
    doc("Jan Smith met Ann Lee in Paris and Rome .", ("Jan Smith", "PER"), ("Ann Lee", "PER"),
        ("Paris", "LOC"), ("Rome", "LOC")),
    doc("No entity here ."),
    doc("University of Paris students .", ("University of Paris", "ORG"), ("Paris", "LOC")),  # nested
    doc("The Commission said .", ("Commission", "ORG")),
]


def test_mentions_are_swapped_for_other_surfaces_of_their_type():
    pool = mention_pool(DOCS)
    assert pool["PER"] == ["Peter Blackburn", "Jan Smith", "Ann Lee"]
    out, counts = mention_swap(DOCS, copies=2, seed=3)
    assert counts == {"documents": 6, "without_entities": 1, "overlapping_entities": 1,
                      "written": 8, "mentions_swapped": 2 * 10}
    sources = [d for d in DOCS if d.entities and "University" not in d.text]
    for original, new in zip([s for s in sources for _ in range(2)], out):
        assert len(new.entities) == len(original.entities)
        rest_new, rest_old, last_new, last_old = [], [], 0, 0
        for old_e, new_e in zip(sorted(original.entities), new.entities):
            assert new_e.type == old_e.type
            assert new.surface(new_e) in pool[new_e.type]
            assert new.surface(new_e) != original.surface(old_e)  # every type has > 1 surface
            rest_new.append(new.text[last_new:new_e.start])
            rest_old.append(original.text[last_old:old_e.start])
            last_new, last_old = new_e.end, old_e.end
        assert rest_new == rest_old and new.text[last_new:] == original.text[last_old:]


def test_same_seed_same_output_other_seed_differs():
    texts = lambda seed: [d.text for d in mention_swap(DOCS, copies=3, seed=seed)[0]]  # noqa: E731
    assert texts(0) == texts(0)
    assert texts(0) != texts(1)


def test_single_surface_type_is_kept_and_bad_copies_refused():
    out, counts = mention_swap([doc("Bonn is big .", ("Bonn", "LOC"))], copies=1)
    assert [d.text for d in out] == ["Bonn is big ."] and counts["mentions_swapped"] == 0
    with pytest.raises(ConfigError, match="copies=0"):
        mention_swap(DOCS, copies=0)


def test_command_writes_jsonl_usable_as_unlabeled_and_labelled_data(tmp_path):
    out = tmp_path / "swap.jsonl"
    result = call("distill.augment", f"output={out}", "copies=2")
    assert "mention swap:" in result.stderr
    labelled = read_jsonl(out)
    unlabeled = read_split("text", out)
    assert [d.text for d in labelled] == [d.text for d in unlabeled] and len(labelled) > 10
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"text", "entities"}


def test_command_needs_an_output():
    result = call("distill.augment", check=False)
    assert result.returncode == 2 and result.last_line.startswith("error: ")
    assert "output" in result.last_line


def test_conll2003_slice(tmp_path):
    require_shared("conll2003", "train.txt")
    out = tmp_path / "conll_swap.jsonl"
    call("distill.augment", "data=conll2003", "data.limit_train=300", f"output={out}")
    docs = read_jsonl(out)
    assert 100 < len(docs) <= 300
    assert {e.type for d in docs for e in d.entities} == {"LOC", "MISC", "ORG", "PER"}


def sample_module(**kwargs) -> NERDataModule:
    return NERDataModule(dir=str(SAMPLE), train="train.jsonl", dev="dev.jsonl", format="jsonl",
                         **kwargs)


def test_extra_train_appends_gold_documents_after_the_limit(tmp_path):
    swap = tmp_path / "swap.jsonl"
    extra = mention_swap(DOCS)[0]
    write_jsonl(extra, swap)
    for given in (str(swap), [str(swap)]):
        module = sample_module(limit_train=4, extra_train=given)
        module.read()
        train = module.splits["train"]
        assert len(train.docs) == 4 + len(extra)
        assert [d.text for d in train.docs[4:]] == [d.text for d in extra]
        assert train.docs[-1].entities == extra[-1].entities  # the gold spans are kept
        assert str(swap) in train.path and module.config()["extra_train"] == [str(swap)]
    assert sample_module(limit_train=4).config()["extra_train"] == []


def test_extra_train_with_a_label_the_teacher_lacks_is_an_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Rome", "entities": [{"start": 0, "end": 4, "type": "CITY"}]}\n')
    module = sample_module(extra_train=str(bad))
    with pytest.raises(DataError, match=r"bad\.jsonl.*CITY"):
        module.read(labels=["LOC", "MISC", "ORG", "PER"])
    with pytest.raises(DataError, match=r"missing\.jsonl"):
        sample_module(extra_train=str(tmp_path / "missing.jsonl")).read()


def test_a_student_inherits_the_teachers_extra_train_unless_given(tmp_path):
    swap = tmp_path / "swap.jsonl"
    swap.write_text('{"text": "Rome", "entities": [{"start": 0, "end": 4, "type": "LOC"}]}\n')
    stored = {"dir": str(SAMPLE), "format": "jsonl", "files": {"train": "train.jsonl",
              "dev": "dev.jsonl", "test": None}, "extra_train": [str(swap)]}
    teacher = SimpleNamespace(meta={"data": stored}, path=tmp_path / "teacher.ckpt")
    data = OmegaConf.load(REPO / "conf" / "data" / "from_teacher.yaml")
    data.seed = 0
    cfg = OmegaConf.create({"data": data})
    assert student_datamodule(cfg, teacher).extra_train == [str(swap)]
    cfg.data.extra_train = []
    assert student_datamodule(cfg, teacher).extra_train == []


def test_join_train_joins_consecutive_training_documents_after_the_limit(tmp_path):
    plain = sample_module(limit_train=30)
    plain.read()
    sentences = plain.splits["train"].docs
    swap = tmp_path / "swap.jsonl"
    write_jsonl(sentences[:2], swap)
    module = sample_module(limit_train=30, join_train=4, extra_train=str(swap))
    module.read()
    train = module.splits["train"].docs
    assert len(train) == 8 + 2  # 30 documents joined 4 at a time (7 x 4 + 2), then the extra file
    assert train[0].text == " ".join(d.text for d in sentences[:4])
    assert train[7].text == " ".join(d.text for d in sentences[28:30])
    assert [train[1].surface(e) for e in train[1].entities] == \
        [d.surface(e) for d in sentences[4:8] for e in d.entities]  # every entity kept, shifted
    assert sum(len(d.entities) for d in train[:8]) == sum(len(d.entities) for d in sentences)
    assert module.splits["dev"].docs == plain.splits["dev"].docs  # evaluation is not joined
    assert module.config()["join_train"] == 4 and plain.config()["join_train"] is None
    for bad in (0, 2.5, "3"):
        with pytest.raises(ConfigError, match=r"data\.join_train"):
            sample_module(join_train=bad)


def test_a_student_inherits_the_teachers_join_train(tmp_path):
    stored = {"dir": str(SAMPLE), "format": "jsonl", "files": {"train": "train.jsonl",
              "dev": "dev.jsonl", "test": None}, "join_train": 4}
    teacher = SimpleNamespace(meta={"data": stored}, path=tmp_path / "teacher.ckpt")
    data = OmegaConf.load(REPO / "conf" / "data" / "from_teacher.yaml")
    data.seed = 0
    cfg = OmegaConf.create({"data": data})
    assert student_datamodule(cfg, teacher).join_train == 4
    cfg.data.join_train = 1
    assert student_datamodule(cfg, teacher).join_train == 1
