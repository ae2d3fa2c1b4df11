"""Where training text comes from: the user's files, or real English text that ships with Python.

The embedded default is the standard library's ``pydoc_data.topics``: 79 documentation topics,
about 465 thousand characters of English prose and code, on disk in every CPython, no download.
Documents, not characters, are split into training and held-out sets, so no held-out sentence was
seen in training.
"""

from __future__ import annotations

import glob as globlib
import random
from dataclasses import dataclass
from pathlib import Path

from gptedge.errors import UserError

TEXT_SUFFIXES = (".txt", ".md")
DEFAULT_CORPUS_NAME = "pydoc_data.topics (Python's built-in documentation)"
# A lone file is cut into documents of about this many characters (at paragraph breaks).
CHUNK_CHARS = 20_000


@dataclass(frozen=True)
class Document:
    name: str
    text: str


def default_documents() -> list[Document]:
    from pydoc_data.topics import topics

    return [Document(f"pydoc:{name}", text) for name, text in sorted(topics.items())]


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}): check the file and its permissions") from None
    if b"\x00" in data[:8192]:
        raise UserError(f"{path} looks binary (it has NUL bytes): give plain UTF-8 text files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not UTF-8 text (byte {e.start}): convert it, e.g. iconv -t UTF-8, or leave it out"
        ) from None


def _resolve_files(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise UserError(f"folder {source} has no .txt or .md files: put text files in it or pass a file")
        return files
    if any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise UserError(f"the pattern {source!r} matches no files: check the path and quote the pattern")
        return files
    if path.exists():  # /dev/null, a FIFO, a socket: reading it would give nothing or block
        raise UserError(f"corpus {source} is not a regular file or folder: pass a text file, a folder of "
                        f".txt/.md files or a glob")
    raise UserError(f"corpus {source} does not exist: pass a text file, a folder of .txt/.md files or a glob")


def _chunk(name: str, text: str) -> list[Document]:
    """Cut one long text into paragraph-aligned documents so it can be split by document."""
    docs, current, size = [], [], 0
    for para in text.split("\n\n"):
        current.append(para)
        size += len(para) + 2
        if size >= CHUNK_CHARS:
            docs.append(Document(f"{name}#{len(docs)}", "\n\n".join(current)))
            current, size = [], 0
    if current:
        docs.append(Document(f"{name}#{len(docs)}", "\n\n".join(current)))
    return docs


def load_documents(source: str | None = None) -> list[Document]:
    """Read a text file, a folder of .txt/.md files, or a glob; None means the embedded default."""
    if source is None:
        return default_documents()
    docs = [Document(str(p), _read_text(p)) for p in _resolve_files(source)]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise UserError(f"corpus {source} is empty: give files that contain text")
    if len(docs) == 1:
        docs = _chunk(docs[0].name, docs[0].text)
    return docs


def split_documents(
    docs: list[Document], holdout_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """Shuffle with ``seed`` and hold out whole documents (at least one on each side)."""
    if len(docs) < 2:
        raise UserError(
            "the corpus is one short document: give at least two documents (or a longer text) "
            "so some text can be held out for evaluation"
        )
    if not 0.0 < holdout_fraction < 1.0:
        raise UserError(f"holdout fraction {holdout_fraction} is out of range: use a value between 0 and 1")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_held = min(len(docs) - 1, max(1, round(len(docs) * holdout_fraction)))
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [docs[i] for i in train], [docs[i] for i in held]
