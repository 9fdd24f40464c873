"""Write univ's default text corpus from the Python documentation topics every CPython ships (pydoc_data.topics).

    python data/make_corpus.py                 # writes univ/sources/corpus.txt (see data/README.md)
    python data/make_corpus.py --out FILE      # elsewhere (the tests compare the two)

Deterministic for a given CPython version: topics in sorted order, each stripped and followed by a blank line,
whole topics only, skipping any that would take the file past --max-bytes; plain UTF-8 with "\\n" line ends.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
from pathlib import Path
from pydoc_data.topics import topics

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "univ" / "sources" / "corpus.txt"


def corpus_text(max_bytes: int = 300_000) -> str:
    """The corpus: whole topics in sorted order while they fit in ``max_bytes`` UTF-8 bytes."""
    parts, size = [], 0
    for name in sorted(topics):
        part = topics[name].replace("\r\n", "\n").strip() + "\n\n"
        n = len(part.encode("utf-8"))
        if size + n <= max_bytes:
            parts.append(part)
            size += n
    return "".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--max-bytes", type=int, default=300_000)
    args = ap.parse_args()
    data = corpus_text(args.max_bytes).encode("utf-8")
    args.out.write_bytes(data)
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, "
          f"CPython {platform.python_version()}")


if __name__ == "__main__":
    main()
