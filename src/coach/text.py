"""Plain-text helpers shared by every stage: sentences, list items, citations, invisible characters, tokens.

One place decides where a sentence ends, so the chunker, the key points, the figure check, the stream
guard and the soft stop of an answer all agree (an "e.g." never ends a sentence for any of them).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

# Words written with a full stop that does not end the sentence (compared lower-case, without the last dot).
ABBREVIATIONS = frozenset({
    "e.g", "i.e", "etc", "vs", "cf", "approx", "incl", "esp", "min", "max", "no", "nos", "dept", "u.s", "u.k",
    "dr", "mr", "mrs", "ms", "prof", "st", "jr", "sr", "inc", "ltd", "co", "corp",
})

# [3], [1, 4], [2; 5] and [ 7 ]: the numbers of the passages a statement comes from.
CITATION = re.compile(r"\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
# "- item", "* item", "• item", "1. item", "2) item"
LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s+\S")
# A sentence end: the mark, any closing quote or bracket, and a citation written after the full stop.
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?:[ \t]*\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\])?(?=\s)|\n")
_END_AT_TAIL = re.compile(r"[.!?]+[\"'\u201d\u2019)]*(?:\s*\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\])?$")
_WORD_BEFORE = re.compile(r"(?:^|[\s(\"'])((?:[A-Za-z]\.)*[A-Za-z]+)$")
_NEXT_STARTS = re.compile(r"\s*(?:[A-Z0-9\"'(\u201c\u2018*\u2022-]|$)")
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200f\u2028\u2029\u202a-\u202e"
                        r"\u2060-\u2064\ufeff]")


def _abbreviation_before(text: str, end: int) -> bool:
    match = _WORD_BEFORE.search(text, 0, end)
    return match is not None and match.group(1).lower() in ABBREVIATIONS


def boundaries(text: str, strict: bool = False) -> Iterator[int]:
    """Offsets just past each sentence end in text (a line break always ends one).

    A full stop, question or exclamation mark ends a sentence when white space follows and the word
    before it is no abbreviation; closing quotes and brackets and a citation right after it belong to
    the sentence. With `strict` (finished text), the next sentence must also start like one: a capital,
    digit, quote, bracket or bullet. Streamed text is not strict: its next word has not arrived yet.
    """
    for match in _END.finditer(text):
        if match.group() != "\n":
            if _abbreviation_before(text, match.start()):
                continue
            if strict and not _NEXT_STARTS.match(text, match.end()):
                continue
        yield match.end()


def split_sentences(text: str) -> list[str]:
    """The sentences (and lines) of finished text, stripped, empty ones left out."""
    out, start = [], 0
    for end in boundaries(text, strict=True):
        out.append(text[start:end].strip())
        start = end
    out.append(text[start:].strip())
    return [s for s in out if s]


def ends_sentence(text: str) -> bool:
    """Whether text (a line) ends with the end of a sentence, a citation after it included."""
    match = _END_AT_TAIL.search(text.rstrip())
    return match is not None and not _abbreviation_before(text, match.start())


def is_list_item(line: str) -> bool:
    """Whether the line is a bullet or numbered item with some text."""
    return bool(LIST_ITEM.match(line))


def cited_numbers(text: str) -> list[int]:
    """Every passage number cited in text, in order, repeats included."""
    return [int(n) for group in CITATION.findall(text) for n in re.split(r"\s*[,;]\s*", group)]


def strip_citations(text: str) -> str:
    """Text without its [n] citations (white space left as it was)."""
    return CITATION.sub("", text)


def without_invisible(text: str) -> str:
    """Text in NFC with control, zero-width and direction-override characters removed."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFC", text))


def estimate_tokens(text: str) -> int:
    """About four characters a token: for models whose tokenizer is not at hand."""
    return max(1, len(text) // 4)
