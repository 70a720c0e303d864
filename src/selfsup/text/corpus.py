"""Text corpora as documents of segments: a user's .txt files or .jsonl file, or the built-in Bible.

How a user's text is split (the input format of BERT's own create_pretraining_data.py, made tolerant of prose):
- a document is a block of lines separated from the next by one or more blank lines, so a file without blank
  lines is one document; in a .jsonl file each line's "text" is one document (blank lines inside it ignored);
- a segment is one line of a block, further split into sentences after `.`, `!` or `?` followed by white space
  (closing quotes and brackets stay with their sentence; abbreviations such as "Mr. Smith" split too), so
  "one sentence per line" files keep their lines.
NSP and SOP pairs are built from consecutive segments of one document (pairs.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from selfsup.errors import SelfsupError

_BLANK_LINES = re.compile(r"\n\s*\n")
# Latin-script ends (. ! ?, maybe closed by a quote or bracket) before white space; the ends of scripts written
# without spaces between sentences split where they stand: CJK 。！？｡, Devanagari danda । ॥, Arabic/Urdu ؟ ۔,
# Ethiopic ።, Armenian ։, Myanmar ။, Greek ; (question mark).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'”’)\]])\s+|(?<=[。！？｡।॥؟۔።։။;])\s*")
_WHAT_TO_PASS = "pass a folder of .txt files, one .txt file, a .jsonl file with a \"text\" field per line, or bible"


@dataclass(frozen=True)
class Document:
    """One document: its segments (sentences, lines or verses) in order, its name (file, file:line or "Genesis 1")
    and, for the Bible, its book and genre (empty for a user's text)."""

    name: str
    segments: tuple[str, ...]
    book: str = ""
    genre: str = ""


def split_segments(text: str) -> list[str]:
    """Lines of `text`, each split into sentences; white space collapsed, empty ones dropped."""
    segments = []
    for line in text.splitlines():
        segments += [" ".join(s.split()) for s in _SENTENCE_END.split(line) if s.strip()]
    return segments


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SelfsupError(f"{path} is not UTF-8 text (byte {e.start}): convert it, e.g. with iconv") from e


def _txt_documents(path: Path) -> list[Document]:
    blocks = _BLANK_LINES.split(_read(path))
    documents = [Document(str(path), tuple(split_segments(block))) for block in blocks]
    return [d for d in documents if d.segments]


def _jsonl_documents(path: Path) -> list[Document]:
    documents = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SelfsupError(f"{path}, line {number}: not valid JSON ({e.msg}); each line must be "
                               "an object with a \"text\" field") from e
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SelfsupError(f"{path}, line {number}: expected an object with a string \"text\" field, "
                               f"got {line[:60]!r}")
        segments = split_segments(record["text"])
        if segments:
            documents.append(Document(f"{path}:{number}", tuple(segments)))
    return documents


def read_documents(path: str | Path) -> list[Document]:
    """Documents from a folder (every *.txt under it, any nesting, in sorted order), a .txt file or a .jsonl file.
    Raises SelfsupError when the path is missing or of another kind, or holds no text."""
    path = Path(path)
    if not path.exists():
        raise SelfsupError(f"no text at {path}: {_WHAT_TO_PASS}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")
        if not files:
            raise SelfsupError(f"no .txt files under {path}: {_WHAT_TO_PASS}")
        documents = [d for f in files for d in _txt_documents(f)]
    elif path.suffix.lower() == ".txt":
        documents = _txt_documents(path)
    elif path.suffix.lower() == ".jsonl":
        documents = _jsonl_documents(path)
    else:
        raise SelfsupError(f"{path} is neither a .txt nor a .jsonl file: {_WHAT_TO_PASS}")
    if not documents:
        raise SelfsupError(f"{path} holds no text (only empty files or blank lines): {_WHAT_TO_PASS}")
    return documents
