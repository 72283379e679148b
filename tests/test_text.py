"""Plain-text helpers every stage shares: where a sentence ends, list items, citations, invisible characters."""

from __future__ import annotations

import pytest

from coach.text import (
    ABBREVIATIONS,
    CITATION,
    boundaries,
    cited_numbers,
    ends_sentence,
    estimate_tokens,
    is_list_item,
    split_sentences,
    strip_citations,
    without_invisible,
)


# -- sentence boundaries ---------------------------------------------------------------------
@pytest.mark.parametrize(("text", "sentences"), [
    ("Entry level pays well. Senior level pays more.", ["Entry level pays well.", "Senior level pays more."]),
    ("Is it paid? Yes! Quite well.", ["Is it paid?", "Yes!", "Quite well."]),
    ("Know frameworks, e.g. TensorFlow and PyTorch. Then more.",
     ["Know frameworks, e.g. TensorFlow and PyTorch.", "Then more."]),
    ("Own the roadmap, i.e. Plan the work. Then ship.", ["Own the roadmap, i.e. Plan the work.", "Then ship."]),
    ("Health, dental, vision etc. Are included. Ask.", ["Health, dental, vision etc. Are included.", "Ask."]),
    ("Pay in the U.S. Market is high. Elsewhere less.", ["Pay in the U.S. Market is high.", "Elsewhere less."]),
    ("Compare AI vs. Classic ML. Both matter.", ["Compare AI vs. Classic ML.", "Both matter."]),
    ("Salaries rose 2.5 percent. Bonuses 10.5 percent.", ["Salaries rose 2.5 percent.", "Bonuses 10.5 percent."]),
    ("A Chief AI Officer earns $1.2M. Rarely more.", ["A Chief AI Officer earns $1.2M.", "Rarely more."]),
    ("It pays well. [1] Senior pays more. [2]", ["It pays well. [1]", "Senior pays more. [2]"]),
    ("It pays well.[1, 3] Next one.", ["It pays well.[1, 3]", "Next one."]),
    ("It pays well [1]. Next one [2].", ["It pays well [1].", "Next one [2]."]),
    ('He said "it pays." Then he left.', ['He said "it pays."', "Then he left."]),
    ("(It pays well.) Then more.", ["(It pays well.)", "Then more."]),
    ("Line one\nLine two", ["Line one", "Line two"]),
    ("- Entry Level: $150,000\n- Mid-Level: $180,000", ["- Entry Level: $150,000", "- Mid-Level: $180,000"]),
    ("No full stop at all", ["No full stop at all"]),
    ("", []),
])
def test_finished_text_is_split_into_its_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@pytest.mark.parametrize("abbreviation", ["e.g.", "i.e.", "etc.", "U.S.", "vs.", "Dr.", "approx."])
def test_an_abbreviation_never_ends_a_sentence_strict_or_not(abbreviation: str) -> None:
    text = f"Before {abbreviation} After it."
    assert list(boundaries(text)) == []
    assert list(boundaries(text, strict=True)) == []
    assert abbreviation.lower().rstrip(".") in ABBREVIATIONS


def test_a_boundary_is_the_offset_just_past_the_sentence_end() -> None:
    text = "It pays well. [1] Next. Last"
    ends = list(boundaries(text))
    assert ends == [len("It pays well. [1]"), len("It pays well. [1] Next.")]
    assert text[:ends[0]] == "It pays well. [1]", "the citation after the full stop belongs to the sentence"


def test_a_decimal_point_ends_no_sentence() -> None:
    assert list(boundaries("A rise of 2.5 percent and 3.75 more")) == []


def test_a_line_break_always_ends_a_sentence() -> None:
    text = "Key skills include:\n- Empathy"
    assert list(boundaries(text)) == [len("Key skills include:\n")]
    assert list(boundaries(text, strict=True)) == [len("Key skills include:\n")]


@pytest.mark.parametrize(("text", "streamed", "strict"), [
    ("It ends here. and goes on", [13], []),
    ("It ends here. And goes on", [13], [13]),
    ("It ends. (and more)", [8], [8]),
    ("It ends here. ", [13], [13]),
])
def test_streaming_mode_ends_a_sentence_before_the_next_word_is_known(text: str, streamed: list[int],
                                                                      strict: list[int]) -> None:
    """A streamed sentence ends at its full stop and white space; in finished text the next one must start like one."""
    assert list(boundaries(text)) == streamed
    assert list(boundaries(text, strict=True)) == strict


def test_strict_mode_needs_a_sentence_start_after_the_full_stop() -> None:
    assert list(boundaries("Pays well. and more", strict=True)) == []
    assert list(boundaries("Pays well. And more", strict=True)) == [len("Pays well.")]
    assert list(boundaries("Pays well. 401(k) too", strict=True)) == [len("Pays well.")]
    assert list(boundaries("Pays well. - a bullet", strict=True)) == [len("Pays well.")]


def test_a_full_stop_at_the_very_end_waits_for_what_follows() -> None:
    """While streaming, "U.S" + "." could still become "U.S. market": no white space yet, no boundary."""
    assert list(boundaries("It pays well.")) == []
    assert list(boundaries("It pays well. ")) == [len("It pays well.")]


# -- ends_sentence ----------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "ends"), [
    ("It pays well.", True),
    ("It pays well!", True),
    ("Does it pay?", True),
    ("It pays well [1].", True),
    ("It pays well. [1]", True),
    ("It pays well. [1, 2]  ", True),
    ('He said "it pays."', True),
    ("Frameworks, e.g.", False),
    ("Pay in the U.S.", False),
    ("Benefits, etc.", False),
    ("It pays", False),
    ("It pays [1]", False),
    ("These include:", False),
    ("", False),
])
def test_ends_sentence(line: str, ends: bool) -> None:
    assert ends_sentence(line) is ends


# -- list items -------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "item"), [
    ("- Skill Gaps: training", True),
    ("* Skill Gaps", True),
    ("\u2022 Skill Gaps", True),
    ("1. Skill Gaps", True),
    ("12) Skill Gaps", True),
    ("   - indented", True),
    ("-Skill Gaps", False),
    ("- ", False),
    ("123. Not a list number", False),
    ("2.5 percent more", False),
    ("Skill Gaps", False),
])
def test_list_items(line: str, item: bool) -> None:
    assert is_list_item(line) is item


# -- citations --------------------------------------------------------------------------------
def test_cited_numbers_in_order_with_repeats() -> None:
    assert cited_numbers("A [3]. B [1, 4]. C [2; 5] and [ 7 ] and [3].") == [3, 1, 4, 2, 5, 7, 3]


@pytest.mark.parametrize("text", ["[a]", "[1a]", "[]", "401(k)", "array[i]", "[1,]"])
def test_brackets_that_are_not_citations(text: str) -> None:
    assert cited_numbers(text) == []
    assert strip_citations(text) == text


def test_strip_citations_leaves_the_white_space_as_it_was() -> None:
    assert strip_citations("Entry level pays $150,000 [1]. Bonus [2, 3][4].") == "Entry level pays $150,000 . Bonus ."
    assert not CITATION.search(strip_citations("x [1] y [ 2 ; 3 ] z"))


# -- invisible characters and tokens ----------------------------------------------------------
@pytest.mark.parametrize(("text", "clean"), [
    ("entry\u200b-level\u200d pay\u2060", "entry-level pay"),
    ("\u202eWhat pays?\u202c\u200f", "What pays?"),
    ("\ufeffBOM first", "BOM first"),
    ("bell\u0007 null\u0000 escape\x1b[31m", "bell null escape[31m"),
    ("prote\u0301ge\u0301", "prot\u00e9g\u00e9"),
    ("line\nbreak\ttab", "line\nbreak\ttab"),
    ("💰 emoji 🤔", "💰 emoji 🤔"),
])
def test_without_invisible(text: str, clean: str) -> None:
    assert without_invisible(text) == clean


def test_without_invisible_composes_accents() -> None:
    assert "\u0301" not in without_invisible("cafe\u0301")
    assert without_invisible("cafe\u0301") == "caf\u00e9"


@pytest.mark.parametrize(("text", "tokens"), [("", 1), ("abc", 1), ("abcdefgh", 2), ("x" * 4000, 1000)])
def test_estimate_tokens_is_about_four_characters_a_token(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens
