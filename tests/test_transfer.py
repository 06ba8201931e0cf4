"""Transfer text (distill.data.transfer): files, globs and folders, units, decoding, the counts of
what is left out (empty, duplicate, equal to dev/test text, over the limit), the data module's
KD-only windows, and tools/reuters_to_text.py on synthetic SGML and the real collection."""

from __future__ import annotations

import importlib.util
import json
import logging

import pytest
from conftest import REPO, SAMPLE, require_shared
from omegaconf import OmegaConf

from distill.data.datamodule import NERDataModule
from distill.data.transfer import read_transfer
from distill.errors import ConfigError, DataError


def write(folder, name: str, content: str | bytes):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def texts(docs) -> list[str]:
    return [d.text for d in docs]


# -- what is read -------------------------------------------------------------------------------

def test_globs_lists_and_folders_expand_in_sorted_order(tmp_path):
    write(tmp_path, "b.txt", "b one\nb two\n")
    write(tmp_path, "a.txt", "a one\n")
    write(tmp_path, "sub/c.txt", "c one\n")
    docs, counts = read_transfer(str(tmp_path / "*.txt"))
    assert texts(docs) == ["a one", "b one", "b two"]
    assert counts["files"] == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert [d.source for d in docs] == [f"{tmp_path}/a.txt:1", f"{tmp_path}/b.txt:1", f"{tmp_path}/b.txt:2"]
    docs, _ = read_transfer([str(tmp_path / "sub/c.txt"), str(tmp_path / "b.txt")])  # given order
    assert texts(docs) == ["c one", "b one", "b two"]
    assert texts(read_transfer(str(tmp_path / "**/*.txt"))[0]) == ["a one", "b one", "b two", "c one"]
    assert texts(read_transfer(str(tmp_path))[0]) == ["a one", "b one", "b two"]  # not sub/


@pytest.mark.parametrize("spec, message", [
    ("nothing/*.txt", "nothing/*.txt: no files match"),
    ("missing.txt", "missing.txt: file not found"),
    ("empty_dir", "empty_dir: folder holds no files"),
])
def test_unmatched_globs_and_missing_files_are_one_line_errors(tmp_path, spec, message):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError) as error:
        read_transfer(str(tmp_path / spec))
    assert str(error.value) == f"{tmp_path}/{message}" and "\n" not in str(error.value)


def test_jsonl_lines_and_whole_files(tmp_path):
    records = [{"text": "Anna flew .", "entities": [{"start": 0, "end": 4, "type": "PER"}]},
               {"text": "Bo ran .", "id": 7}]
    write(tmp_path, "r.jsonl", "\n".join(map(json.dumps, records)) + "\n")
    write(tmp_path, "r.data", json.dumps(records[1]) + "\n")  # JSON by its first line
    write(tmp_path, "doc1.txt", "A long article\nwrapped over lines.\n\nNext paragraph.\n")
    write(tmp_path, "doc2.txt", "Second article.")
    docs, _ = read_transfer([str(tmp_path / "r.jsonl"), str(tmp_path / "r.data")])
    assert texts(docs) == ["Anna flew .", "Bo ran ."] and all(not d.entities for d in docs)
    assert read_transfer(str(tmp_path / "r.data"))[1]["duplicates"] == 0
    lines, _ = read_transfer(str(tmp_path / "doc*.txt"))
    assert texts(lines) == ["A long article", "wrapped over lines.", "Next paragraph.", "Second article."]
    files, counts = read_transfer(str(tmp_path / "doc*.txt"), unit="file")
    assert texts(files) == ["A long article\nwrapped over lines.\n\nNext paragraph.\n", "Second article."]
    assert [d.source for d in files] == [str(tmp_path / "doc1.txt"), str(tmp_path / "doc2.txt")]
    assert counts["skipped_empty"] == 0
    # JSON lines stay one document a record whatever the unit
    assert texts(read_transfer(str(tmp_path / "r.jsonl"), unit="file")[0]) == ["Anna flew .", "Bo ran ."]


def test_bad_json_and_bad_settings(tmp_path):
    write(tmp_path, "r.jsonl", '{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(DataError, match=r"r.jsonl:2: missing field 'text' \(found keys: txt\)"):
        read_transfer(str(tmp_path / "r.jsonl"))
    path = str(write(tmp_path, "t.txt", "x\n"))
    with pytest.raises(ConfigError, match="data.unlabeled_unit='para': expected one of line, file"):
        read_transfer(path, unit="para")
    with pytest.raises(ConfigError, match="data.unlabeled_encoding='nope': unknown codec"):
        read_transfer(path, encoding="nope")
    with pytest.raises(ConfigError, match="data.limit_unlabeled=-1"):
        read_transfer(path, limit=-1)


def test_invalid_utf8_names_file_and_byte_offset_unless_an_encoding_is_set(tmp_path):
    path = write(tmp_path, "news.txt", b"Plain line.\nM\xfcnchen won.\n")
    with pytest.raises(DataError) as error:
        read_transfer(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}:2: not valid UTF-8 (invalid start byte: byte b'\\xfc' at offset 13)")
    assert "set data.unlabeled_encoding (e.g. latin-1)" in message and "\n" not in message
    docs, _ = read_transfer(str(path), encoding="latin-1")
    assert texts(docs) == ["Plain line.", "München won."]
    with pytest.raises(DataError, match=r"news.txt:2: not valid ascii \(ordinal not in range"):
        read_transfer(str(path), encoding="ascii")


# -- what is left out, and counted --------------------------------------------------------------

def test_empty_duplicate_eval_and_limited_units_are_counted(tmp_path, caplog):
    write(tmp_path, "a.txt", "one\n\n   \ntwo\none\nPaul visited Paris.\n")
    write(tmp_path, "b.txt", "two\nthree\n Paul  visited Paris . \nfour\n")
    write(tmp_path, "c.txt", "\n")
    spec = str(tmp_path / "*.txt")
    eval_texts = ["Paul visited Paris .", "Nothing else"]
    with caplog.at_level(logging.INFO, logger="distill"):
        docs, counts = read_transfer(spec, eval_texts=eval_texts)
    assert texts(docs) == ["one", "two", "three", "four"]
    assert counts == {"files": [str(tmp_path / f) for f in ("a.txt", "b.txt", "c.txt")],
                      "documents": 4, "skipped_empty": 3, "empty_files": 1, "duplicates": 2,
                      "dropped_eval_duplicates": 2, "limited": 0}
    logged = [r.getMessage() for r in caplog.records if "transfer text" in r.getMessage()]
    assert logged == [("transfer text: 4 documents from 3 file(s) (left out: 3 empty, 2 duplicates, "
                       "2 equal to a dev/test text, 0 beyond data.limit_unlabeled; "
                       "1 file(s) without text)")]
    docs, counts = read_transfer(spec, limit=3, eval_texts=eval_texts)  # after dedup and leakage
    assert texts(docs) == ["one", "two", "three"] and counts["limited"] == 1
    assert counts["documents"] == 3
    assert read_transfer(spec, limit=10)[1]["limited"] == 0
    assert read_transfer(spec, limit=0)[0] == []


def test_nothing_left_is_an_error(tmp_path):
    path = str(write(tmp_path, "a.txt", "Paul visited Paris.\n\n"))
    with pytest.raises(DataError, match=r"no transfer documents left \(1 empty, 0 duplicates, "
                                        r"1 equal to a dev/test text"):
        read_transfer(path, eval_texts=["Paul visited Paris."])


# -- through the data module --------------------------------------------------------------------

def test_datamodule_adds_kd_only_windows_and_reports_counts(tiny_bert, tmp_path):
    from distill.model.encoders import load_tokenizer

    dev = json.loads((SAMPLE / "dev.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    write(tmp_path, "t/a.txt", f"Anna Berg flew to Lisbon .\n\n{dev}\nThe Lisbon Titans won .\n")
    write(tmp_path, "t/b.jsonl", '{"text": "Anna Berg flew to Lisbon ."}\n{"text": "Rain in Oslo ."}\n')
    spec = OmegaConf.create([str(tmp_path / "t/*.txt"), str(tmp_path / "t/b.jsonl")])  # as Hydra
    dm = NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl", limit_train=4, limit_eval=2,
                       unlabeled=spec, max_length=48, stride=12, limit_unlabeled=2)
    dm.read()
    assert dm.unlabeled == [str(tmp_path / "t/*.txt"), str(tmp_path / "t/b.jsonl")]
    assert dm.unlabeled_report()["windows"] is None
    dm.encode(load_tokenizer(str(tiny_bert)))
    train = dm.dataset("train")
    assert [w.labeled for w in train.windows] == [True] * 4 + [False] * 2
    assert texts(train.docs[4:]) == ["Anna Berg flew to Lisbon .", "The Lisbon Titans won ."]
    assert dm.unlabeled_report() == {
        "spec": dm.unlabeled, "files": [str(tmp_path / "t/a.txt"), str(tmp_path / "t/b.jsonl")],
        "documents": 2, "skipped_empty": 1, "empty_files": 0, "duplicates": 1,
        "dropped_eval_duplicates": 1, "limited": 1, "windows": 2}
    config = dm.config()
    assert config["unlabeled"] == dm.unlabeled and config["limit_unlabeled"] == 2
    assert config["unlabeled_encoding"] is None and config["unlabeled_unit"] is None
    json.dumps(config)  # a checkpoint stores it
    assert NERDataModule(SAMPLE, "train.jsonl", "dev.jsonl").unlabeled_report() is None


# -- tools/reuters_to_text.py -------------------------------------------------------------------

def _reuters():
    spec = importlib.util.spec_from_file_location("reuters_to_text", REPO / "tools" / "reuters_to_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SGML = (b'<!DOCTYPE lewis SYSTEM "lewis.dtd">\n'
        b'<REUTERS TOPICS="YES" NEWID="1">\n<TEXT>&#2;\n<TITLE>ACME BUYS</TITLE>\n'
        b'<DATELINE>    NEW YORK, Feb 26 - </DATELINE><BODY>Acme Inc &lt;ACME> said it\n'
        b'bought Brown &amp; Co for 5 mln dlrs. Mr. Smith of the U.S. unit\n'
        b'said so.\n'
        b'    The deal closes in M\xfcnchen in March. It was made by Acme\n'
        b'Industries Inc. The price was not disclosed.\n'
        b' Reuter\n&#3;</BODY></TEXT>\n</REUTERS>\n'
        b'<REUTERS TOPICS="NO" NEWID="2">\n<TEXT TYPE="BRIEF">&#2;\n'
        b'<TITLE>NO BODY HERE</TITLE>&#3;</TEXT>\n</REUTERS>\n')


@pytest.mark.parametrize("unit, expected", [
    ("paragraph", [("Acme Inc <ACME> said it bought Brown & Co for 5 mln dlrs. Mr. Smith of the "
                    "U.S. unit said so."),
                   ("The deal closes in München in March. It was made by Acme Industries Inc. The "
                    "price was not disclosed.")]),
    ("sentence", ["Acme Inc <ACME> said it bought Brown & Co for 5 mln dlrs.",
                  "Mr. Smith of the U.S. unit said so.", "The deal closes in München in March.",
                  "It was made by Acme Industries Inc.", "The price was not disclosed."]),
])
def test_reuters_sgml_to_units(tmp_path, unit, expected):
    tool = _reuters()
    write(tmp_path, "reut2-000.sgm", SGML)
    out = tmp_path / "out" / "units.txt"
    assert tool.main(["--input", str(tmp_path), "--unit", unit, "-o", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == expected
    assert not any(bad in line for line in lines for bad in ("\x03", "\x02", "&amp;", "&lt;", "&#"))
    _, counts = tool.convert([tmp_path / "reut2-000.sgm"], "article")
    assert counts | {"units": 1} == {"files": 1, "records": 2, "articles": 1, "without_body": 1,
                                     "empty_bodies": 0, "non_ascii_bytes": 1, "units": 1,
                                     "words": sum(len(s.split()) for s in expected)}


def test_reuters_sentence_rule():
    tool = _reuters()
    assert tool.sentences('He said, "It is over." Then he left. Sales rose 5.2 pct by Feb. 26 at '
                          "St. Louis Co. Ltd, he said. Asked why, he said no. Prices fell! Really? "
                          "J. Smith of the U.K. Said so to Dr. Who.") == [
        'He said, "It is over."', "Then he left.",
        "Sales rose 5.2 pct by Feb. 26 at St. Louis Co. Ltd, he said.", "Asked why, he said no.",
        "Prices fell!", "Really?", "J. Smith of the U.K. Said so to Dr. Who."]


def test_reuters_real_file_parses():
    folder = require_shared("reuters21578")
    tool = _reuters()
    lines, counts = tool.convert([folder / "reut2-000.sgm"], "sentence")
    assert counts["articles"] > 900 and counts["records"] == 1000
    assert len(lines) > 5 * counts["articles"] and not any("\x03" in line or "&lt;" in line for line in lines)
    _, latin = tool.convert([folder / "reut2-017.sgm"], "article")  # the one non-UTF-8 file
    assert latin["non_ascii_bytes"] == 1


def test_transfer_ratio_mixes_all_gold_with_the_next_share_of_transfer_text():
    """data.transfer_ratio: each epoch holds every gold window and ratio x as many transfer
    windows, the next ones of a fixed permutation, so the epochs walk through all the transfer
    text while the gold is re-seen every epoch."""
    from distill.data.datamodule import BucketBatchSampler

    gold, transfer = 10, 35
    sampler = BucketBatchSampler([4] * (gold + transfer), list(range(gold + transfer)), batch_size=4,
                                 shuffle=True, transfer=(gold, 5))
    seen = []
    for epoch in range(7):
        sampler.set_epoch(epoch)
        windows = sorted(i for batch in sampler for i in batch)
        assert windows[:gold] == list(range(gold))  # all the gold, once
        extra = windows[gold:]
        assert len(extra) == 5 and len(set(extra)) == 5 and all(i >= gold for i in extra)
        seen += extra
    assert sorted(seen) == list(range(gold, gold + transfer))  # 7 epochs x 5 = all 35, once each
