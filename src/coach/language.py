"""Is a question written in English? The knowledge base and the answers are English; a question in another
language is told so, before the spelling pass would "correct" its words into English ones ("Wie" -> "Wide").

The rule, over the question's words:
- mostly letters of a non-Latin script (Cyrillic, Greek, Arabic, Hebrew, Devanagari, CJK, Thai, Hangul...):
  not English;
- else the function words of other languages (the short, frequent words every sentence has: articles,
  pronouns, prepositions, question words; lists below) are counted against English ones. At least
  FOREIGN_MIN of them, and more than the English ones, is not English. Content words are never used: a
  question full of names, tools and loanwords ("Kubernetes", "Python", "Director") is still English.
"""

from __future__ import annotations

import re
import unicodedata

FOREIGN_MIN = 2  # one word alone ("die", "was", "con") is too often English or a name
NON_LATIN_SHARE = 0.5  # of a question's letters

_ENGLISH = frozenset("""the a an of to in and or is are was were be been do does did what which who whom whose
how why when where can could should would will shall may might must i you he she it we they me my your our
their this that these those for with from on at by about as into than then there here not no yes am has have
had if so but""".split())
# Function words of other languages, left out where they are also English words ("die", "also", "come", ...).
_FOREIGN = frozenset("""
der das den dem des ein eine einen einem einer und oder ist sind wie was wer wo warum wann welche welcher
welches ich du er sie wir ihr mein meine dein nicht kein keine mit von zu bei nach für über auch noch sehr
viel verdient man kann muss soll diese dieser dieses rolle jahre gehalt
le la les un une des du et ou est sont comment quel quelle quels pourquoi quand qui que je tu il elle nous
vous ils elles mon ma mes ton pas avec pour dans sur chez aussi très combien gagne peut doit cette ce ces
el los las una unos unas y es son cómo como qué cuál cuánto cuanto por qué porque cuándo quién yo tú él
ella nosotros ellos mi mis tu tus su sus con para sin muy también puede debe este esta estos estas gana
il lo gli uno una e è sono come che chi perché quando dove io lui lei noi voi loro mio mia con per
non anche molto può deve questo questa quanto guadagna
o os um uma é são quanto quem onde eu ele ela nós vocês meu minha não com para também muito pode deve
isto esse essa ganha
het een en of is zijn hoe wat wie waar waarom wanneer welke ik jij hij zij wij jullie mijn niet geen met
van voor ook veel kan moet deze dit verdient
""".split()) - _ENGLISH
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def not_english(text: str) -> bool:
    """Whether a question is written in another language than English (the rule in the module's docstring)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if "LATIN" in unicodedata.name(c, ""))
    if latin < len(letters) * (1 - NON_LATIN_SHARE):
        return True
    words = [w.lower() for w in _WORD.findall(text)]
    foreign = sum(1 for w in words if w in _FOREIGN)
    english = sum(1 for w in words if w in _ENGLISH)
    return foreign >= FOREIGN_MIN and foreign > english
