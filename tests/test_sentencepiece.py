"""A sentencepiece (Unigram) XLM-R-style model, built here without network, through teacher ->
student -> predict -> ONNX export.

transformers >= 4.46 is allowed; its sentencepiece tokenizers save the binary
``sentencepiece.bpe.model`` beside tokenizer.json (transformers 5 saves tokenizer.json only).
That save is reproduced here, so the binary file travels through every checkpoint and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_util import QUIET, call
from conftest import SAMPLE
from distill.io.checkpoint import safe_load

SPM = "sentencepiece.bpe.model"
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..4
TEXTS = ["EU rejects German call to boycott British lamb.", "Barack Obama visited Paris."]


def sentencepiece_model(vocab: list[tuple[str, float]]) -> bytes:
    """A sentencepiece ModelProto (the binary ``.model`` format) of a Unigram vocabulary."""
    from transformers.utils import sentencepiece_model_pb2_new as spm

    proto = spm.ModelProto()
    proto.trainer_spec.model_type = spm.TrainerSpec.UNIGRAM
    proto.trainer_spec.vocab_size = len(vocab)
    kinds = {"<unk>": spm.ModelProto.SentencePiece.UNKNOWN}
    for piece, score in vocab:
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, score
        entry.type = kinds.get(piece, spm.ModelProto.SentencePiece.CONTROL if piece in SPECIAL
                               else spm.ModelProto.SentencePiece.NORMAL)
    return proto.SerializeToString()


def build_tiny_xlmr(folder: Path) -> Path:
    """A random 2 x 32 XLM-RoBERTa with a Unigram tokenizer trained on the sample corpus."""
    import torch
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    texts = [json.loads(line)["text"] for line in
             (SAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    trained = SentencePieceUnigramTokenizer()
    trained.train_from_iterator(texts, vocab_size=1000, special_tokens=SPECIAL, unk_token="<unk>",
                                show_progress=False)
    vocab = [tuple(v) for v in json.loads(trained.to_str())["model"]["vocab"]]
    assert [piece for piece, _ in vocab[:5]] == SPECIAL
    folder.mkdir(parents=True, exist_ok=True)
    try:  # transformers 5: the Unigram vocabulary itself
        tokenizer = XLMRobertaTokenizerFast(vocab=vocab)
    except TypeError:  # transformers 4
        tokenizer = XLMRobertaTokenizerFast(tokenizer_object=trained._tokenizer, bos_token="<s>",
                                            eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                            unk_token="<unk>", pad_token="<pad>",
                                            mask_token="<mask>")
    tokenizer.save_pretrained(folder)
    (folder / SPM).write_bytes(sentencepiece_model(vocab))
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2)
    XLMRobertaModel(config).save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_xlmr(tmp_path, monkeypatch):
    """The model folder, with XLM-R tokenizers saving ``sentencepiece.bpe.model`` as 4.x does."""
    from transformers import XLMRobertaTokenizerFast

    folder = build_tiny_xlmr(tmp_path / "xlmr")
    original = XLMRobertaTokenizerFast.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        names = original(self, save_directory, *args, **kwargs)
        Path(save_directory, SPM).write_bytes((folder / SPM).read_bytes())
        return (*names, str(Path(save_directory, SPM)))

    monkeypatch.setattr(XLMRobertaTokenizerFast, "save_pretrained", save_pretrained)
    return folder


def test_sentencepiece_model_from_teacher_to_onnx(tiny_xlmr, tmp_path):
    from distill.deploy.export import export
    from distill.deploy.predict import Predictor

    spm_bytes = (tiny_xlmr / SPM).read_bytes()
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    # data.max_length=128 is what XLM-R's 130 positions take (2 are reserved by padding_idx)
    call("distill.teacher", f"model.name_or_path={tiny_xlmr}", "trainer=fast_dev_run",
         "data.limit_train=40", "data.limit_eval=16", "data.max_length=128", *QUIET,
         f"hydra.run.dir={teacher}")
    assert safe_load(teacher / "best.ckpt")["distill"]["tokenizer"][SPM] == spm_bytes
    call("distill.student", f"teacher={teacher}", "student.depth=1", "trainer=fast_dev_run",
         f"kd.cache_dir={tmp_path / 'cache'}", *QUIET, f"hydra.run.dir={student}")
    assert safe_load(student / "best.ckpt")["distill"]["tokenizer"][SPM] == spm_bytes

    docs, out = tmp_path / "docs.txt", tmp_path / "pred.jsonl"
    docs.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    call("distill.predict", f"ckpt={student}", f"input={docs}", f"output={out}")
    predicted = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [p["text"] for p in predicted] == TEXTS

    onnx_dir = tmp_path / "export"
    summary = export(ckpt=str(student), output=str(onnx_dir), parity_docs=8)
    assert summary["onnx"]["max_abs_diff"] < 1e-4 and summary["onnx"]["entities_identical"]
    assert (onnx_dir / SPM).read_bytes() == spm_bytes
    assert spans(Predictor.from_path(onnx_dir, runtime="onnx")) == spans(
        Predictor.from_path(student))


def spans(predictor) -> list[list[tuple[int, int, str]]]:
    return [[(p.start, p.end, p.type) for p in doc] for doc in predictor.predict(TEXTS)]
