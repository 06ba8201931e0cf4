"""F1 of a checkpoint on sentences predicted one at a time vs joined into longer documents.

Joining k consecutive sentences (with one space, entity offsets shifted) makes documents longer
than one window, so the number measures what windowing and the merge of overlapping windows
cost::

    python tools/joined_docs.py outputs/edge/teacher -n 1200 -k 24

The split defaults to the checkpoint's own dev file (its data dir, format and reader options);
``--split``/``--format`` read another one with :func:`distill.data.readers.read_split`.
``--write FILE`` writes the joined documents as JSONL instead (no checkpoint needed), e.g. to
train on them with ``data.extra_train=FILE``::

    python tools/joined_docs.py --split ../shared/data/conll2003/train.txt --format columns \
        -n 3000 -k 24 --write outputs/edge/train_joined24.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # after PYTHONPATH: another checkout of distill can be measured

from distill.data.document import Document, join_every  # noqa: E402


def f1(predictor, docs: list[Document], batch_size: int) -> tuple[float, int]:
    """Micro F1 (in %) of ``predictor`` on ``docs`` and the number of windows they make."""
    from distill.eval.metrics import SpanF1

    texts = [d.text for d in docs]
    predictions = predictor.predict(texts, batch_size=batch_size)
    labels = set(predictor.labels)
    metric = SpanF1(predictor.labels)
    metric.update([[(p.start, p.end, p.type) for p in doc] for doc in predictions],
                  [[(e.start, e.end, e.type) for e in d.entities if e.type in labels] for d in docs])
    return 100 * float(metric.compute()["f1"]), len(predictor.encode(texts))


def checkpoint_split(meta: dict, split: str) -> tuple[Path, str, dict]:
    data = meta.get("data") or {}
    name = (data.get("files") or {}).get(split)
    if not name:
        raise SystemExit(f"the checkpoint names no {split} file; pass --split and --format")
    path = Path(str(data["dir"])) / name
    if not path.is_absolute() and not path.exists():
        path = REPO / path
    return path, data["format"], dict(data.get("options") or {})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", nargs="?", help="checkpoint file, run folder or export folder")
    parser.add_argument("-n", type=int, default=1200, help="first N sentences of the split")
    parser.add_argument("-k", type=int, default=24, help="sentences per joined document")
    parser.add_argument("--split", help="a file to read instead of the checkpoint's dev split")
    parser.add_argument("--format", help="its reader format (default: the checkpoint's)")
    parser.add_argument("--options", default=None, help="reader options as JSON")
    parser.add_argument("--stride", type=int, help="window overlap instead of the checkpoint's")
    parser.add_argument("--max-length", type=int, help="window length instead of the checkpoint's")
    parser.add_argument("--write", help="write the joined documents to this JSONL file and stop")
    parser.add_argument("--threshold", type=float, help="decoding threshold instead of the checkpoint's")
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from distill.data.readers import read_split, write_jsonl
    from distill.deploy.predict import Predictor

    if args.write:
        if not args.split or not args.format:
            parser.error("--write needs --split and --format")
        options = json.loads(args.options) if args.options else {}
        joined_docs = join_every(read_split(args.format, args.split, **options)[: args.n], args.k)
        write_jsonl(joined_docs, args.write)
        print(f"{len(joined_docs)} documents of {args.k} sentences -> {args.write}")
        return {"documents": len(joined_docs)}
    if not args.ckpt:
        parser.error("a checkpoint is needed")
    predictor = Predictor.from_path(args.ckpt, args.runtime, args.threads, args.threshold)
    if args.max_length:
        predictor.max_length = args.max_length
    if args.stride is not None:
        predictor.stride = args.stride
    path, fmt, options = checkpoint_split(predictor.meta, "dev")
    if args.split:
        path, fmt = Path(args.split), args.format or fmt
        options = json.loads(args.options) if args.options else ({} if args.format else options)
    docs = read_split(fmt, path, **options)[: args.n]
    start = time.perf_counter()
    single, single_windows = f1(predictor, docs, args.batch_size)
    joined_docs = join_every(docs, args.k)
    joined, joined_windows = f1(predictor, joined_docs, args.batch_size)
    result = {"split": str(path), "sentences": len(docs), "k": args.k,
              "documents_joined": len(joined_docs), "max_length": predictor.max_length,
              "stride": predictor.stride, "threshold": predictor.threshold, "f1_one_by_one": round(single, 2),
              "f1_joined": round(joined, 2), "diff": round(joined - single, 2),
              "windows_one_by_one": single_windows, "windows_joined": joined_windows,
              "seconds": round(time.perf_counter() - start, 1)}
    print(f"{len(docs)} sentences of {path}: F1 one by one {single:.2f} ({single_windows} windows), "
          f"joined {args.k} at a time {joined:.2f} ({len(joined_docs)} documents, "
          f"{joined_windows} windows; max_length {predictor.max_length}, stride {predictor.stride}):"
          f" {joined - single:+.2f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
