"""Figures in a generated answer must appear in its sources; otherwise they are not shown as fact."""

from __future__ import annotations

import re

from coach.text import CITATION, split_sentences

_NAMES = re.compile(r"\b\d+\s?\([a-z]\)", re.IGNORECASE)  # "401(k)" names a plan; it states no figure
_ENUMERATION = re.compile(r"(?m)^\s*\d{1,2}[.)]\s")
_FIGURE = re.compile(r"(?<![\w.])\$?\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\s?([kKmM](?![a-zA-Z])|%|percent)?")
_RANGE_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s?[-–]\s?\$?(\d+(?:\.\d+)?)\s?([kKmM])\b")


def figures(text: str) -> set[str]:
    """Normalised numbers in text: '$150K' and '150,000' both give '150000'; '10%' gives '10'."""
    text = _ENUMERATION.sub(" ", CITATION.sub(" ", _NAMES.sub(" ", text)))
    # "$150-180K": the unit of the upper end applies to the lower one too.
    text = _RANGE_UNIT.sub(r"\1\3-\2\3", text)
    found = set()
    for whole, frac, unit in _FIGURE.findall(text):
        value = float(whole.replace(",", "") + (f".{frac}" if frac else ""))
        if unit and unit.lower() == "k":
            value *= 1_000
        elif unit and unit.lower() == "m":
            value *= 1_000_000
        found.add(str(int(value)) if value.is_integer() else f"{value:.4f}".rstrip("0"))
    return found


def ungrounded(answer: str, source_text: str) -> set[str]:
    """Figures stated in the answer that the sources never state."""
    return figures(answer) - figures(source_text)


def strip_ungrounded(answer: str, source_text: str) -> tuple[str, set[str]]:
    """The answer without the sentences or bullets that state an unsupported figure."""
    bad = ungrounded(answer, source_text)
    if not bad:
        return answer, bad
    kept = []
    for piece in re.split(r"(\n)", answer):
        if piece == "\n":
            kept.append(piece)
            continue
        sentences = split_sentences(piece)
        kept.append(" ".join(s for s in sentences if not (figures(s) & bad)))
    text = re.sub(r"\n{3,}", "\n\n", "".join(kept)).strip()
    return text, bad


def cite_missing(answer: str, sources: list[tuple[int, str]], min_overlap: int = 2) -> str:
    """Append [n] to each sentence or bullet that states something from source n but cites nothing.

    Small models often forget to cite; the passage sharing the most content words (figures count
    double) with the sentence is the one it came from.
    """
    from coach.retrieval import tokenize

    if not sources:
        return answer
    prepared = [(n, set(tokenize(text)), figures(text)) for n, text in sources]
    out_lines = []
    for line in answer.split("\n"):
        pieces = split_sentences(line) or [line]
        done = []
        for piece in pieces:
            if not piece.strip() or CITATION.search(piece) or piece.rstrip().endswith(":"):
                done.append(piece)
                continue
            words, figs = set(tokenize(piece)), figures(piece)
            best, best_score = 0, 0
            for n, source_words, source_figs in prepared:
                score = len(words & source_words) + 2 * len(figs & source_figs)
                if score > best_score:
                    best, best_score = n, score
            if best and best_score >= min_overlap:
                stripped = piece.rstrip()
                end = stripped[-1] if stripped[-1] in ".!?" else ""
                body = stripped[:-1] if end else stripped
                piece = f"{body} [{best}]{end}" + piece[len(stripped):]
            done.append(piece)
        out_lines.append(" ".join(done))
    return "\n".join(out_lines)
