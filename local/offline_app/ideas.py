"""The idea as data: its text, the words that choose features, and safe names derived from it.

Only derived names leave this module for code: the noun (ASCII letters), the slug
([a-z0-9_]) and plain words (ASCII letters and digits). The raw text stays data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_STOP_WORDS = """a an the and or for with to of in on at by from into about app apps my your our
their that this these is it its be are ai based using use new simple smart plan plans save track
tracker keep manage manager organize organizer planner share find make build create log list book
help get best easy quick daily weekly personal online web platform tool tools hub buddy pal
assistant all one place every everything things stuff saas marketplace market store shop"""
_STOP = frozenset(re.findall(r"[a-z]+", _STOP_WORDS))


@dataclass(frozen=True, slots=True)
class Idea:
    """What the person typed: a title, and optionally a description and a category."""

    title: str
    description: str | None = None
    category: str | None = None

    @classmethod
    def from_context(cls, value: Any) -> Idea | None:
        """The idea in a request's context (`{"title", "description", "category"}`), if any."""
        if not isinstance(value, Mapping) or not isinstance(value.get("title"), str):
            return None
        return cls(
            title=value["title"],
            description=_text_or_none(value.get("description")),
            category=_text_or_none(value.get("category")),
        )

    def words(self) -> list[str]:
        """Lowercase ASCII words of the title, description and category ("to-do" → "todo")."""
        text = " ".join(t for t in (self.title, self.description, self.category) if t)
        return re.findall(r"[a-z0-9]+", re.sub(r"\bto-do\b", "todo", text.lower()))


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def matches(words: Iterable[str], keywords: Iterable[str]) -> bool:
    """Whether a word starts with one of the keywords ("recipes" matches "recipe")."""
    stems = tuple(keywords)
    return any(word.startswith(stems) for word in words) if stems else False


def singular(word: str) -> str:
    """A naive singular: recipes → recipe, entries → entry, boxes → box, class → class."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def plural(word: str) -> str:
    """A naive plural: recipe → recipes, entry → entries, box → boxes."""
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def noun_for(idea: Idea, title_nouns: Mapping[str, str], fallbacks: Iterable[str]) -> str:
    """What one entry of the app is called: ASCII letters only, at most 30.

    A title word listed in `title_nouns` wins ("AI Recipe App" → recipe, "Fitness Buddy" →
    workout); then the first of `fallbacks` (the nouns of the features the idea selected);
    then the first useful title word; else "item".
    """
    title = [singular(w) for w in re.findall(r"[a-z]+", idea.title.lower())]
    for word in title:
        if word in title_nouns:
            return title_nouns[word][:30]
    for noun in fallbacks:
        return noun[:30]
    useful = [w for w in title if w not in _STOP and len(w) > 2]
    return (useful[0] if useful else "item")[:30]


def slug(text: str, default: str = "app") -> str:
    """[a-z0-9_] only, at most 40 characters."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40].strip("_") or default


def plain_words(text: str, default: str = "My app") -> str:
    """The ASCII letters and digits of `text`, as words: safe in Markdown and package names."""
    return " ".join(re.findall(r"[A-Za-z0-9]+", text))[:80].strip() or default
