"""The texts of a dataset's split, documents ``--start`` to ``--stop``, one per line with the labels
dropped: transfer text for ``data.unlabeled`` in the low-label studies (a teacher trained on the
first N training documents; the rest of the training split as raw text).

    python tools/split_text.py --data conll2003 --split train --start 1000 \\
        --output outputs/conll2003_lowlabel/rest_of_train.txt

``--data`` names a config of conf/data/ (its format, options and files); ``data.<key>=value``
overrides may follow. Texts with a line break are refused (the output is one text per line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a config of conf/data/, e.g. conll2003")
    parser.add_argument("--split", default="train", choices=("train", "dev", "test"))
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int, default=None)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("overrides", nargs="*", help="data.<key>=value")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from hydra import compose, initialize_config_dir

    import distill.cli  # noqa: F401  (resolvers)
    from distill.data.readers import read_split

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        data = compose("teacher", overrides=[f"data={args.data}", *args.overrides]).data
    path = Path(data.dir) / data[args.split]
    docs = read_split(data.format, path, **(data.options or {}))[args.start : args.stop]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="\n") as out:
        for k, doc in enumerate(docs, start=args.start):
            if "\n" in doc.text or "\r" in doc.text:
                print(f"error: {path}: document {k} holds a line break", file=sys.stderr)
                return 2
            out.write(doc.text + "\n")
    print(f"{len(docs)} texts ({args.split} documents {args.start}..{args.start + len(docs) - 1} "
          f"of {path}) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
