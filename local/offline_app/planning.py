"""From an idea (and a template) to a Plan: which library features, which files and tables."""

from __future__ import annotations

from collections.abc import Sequence

from local.offline_app.ideas import Idea, matches
from local.offline_app.library import (
    BASE,
    ENTRY_COLUMNS,
    EXTRAS,
    FEATURES,
    MARKETPLACE,
    SAAS,
    Columns,
    LibraryFeature,
    app_noun,
    noun_forms,
    with_requirements,
)
from local.offline_app.render import layout, resolve
from schemas.plan import Column, Feature, FileSpec, Plan, Table

TEMPLATES = ("marketplace", "saas")
_RANK = {"high": 0, "medium": 1, "low": 2}


def select(idea: Idea, template: str | None) -> list[LibraryFeature]:
    """The library features for `idea`: most important first, requirements included.

    A marketplace is its listings, bids, orders and local user (entry-based keyword features
    do not apply to listings); a plain or saas app is the entries base plus what the idea's
    keywords select, and a saas app adds plans, team and usage.
    """
    if template == "marketplace":
        chosen: Sequence[LibraryFeature] = MARKETPLACE
    else:
        words = idea.words()
        chosen = [*BASE, *(f for f in EXTRAS if matches(words, f.keywords))]
        if template == "saas":
            chosen = [*chosen, *SAAS]
    keys = with_requirements(f.key for f in chosen)
    return sorted((FEATURES[k] for k in keys), key=lambda f: _RANK[f.priority])


def _tables(features: Sequence[LibraryFeature], template: str | None) -> list[Table]:
    def table(name: str, columns: Columns) -> Table:
        return Table(name=name, columns=[Column(name=n, type=t) for n, t in columns])

    tables: list[Table] = []
    if any(f.module == "entries" for f in features):
        extra: Columns = tuple(c for f in features for c in f.columns)
        if template == "saas":
            extra += (("account_id", "uuid"),)
        tables.append(table("entries", ENTRY_COLUMNS + extra))
    tables += [table(name, columns) for f in features for name, columns in f.tables]
    return tables


def _summary(idea: Idea, template: str | None, forms: dict[str, str]) -> str:
    if template == "marketplace":
        what = "a marketplace where people list things, bid on them and buy them"
    elif template == "saas":
        what = f"a SaaS app for {forms['nouns']}, with plans, a team and a usage meter"
    else:
        what = f"a single-page app to keep track of {forms['nouns']}"
    text = f"{idea.title.strip()}: {what}."
    if idea.description:
        text += f" {idea.description.strip()}"
    return text[:5000]


def make_plan(idea: Idea, template: str | None) -> Plan:
    """The plan for `idea`: the same idea and template always give the same plan."""
    template = template if template in TEMPLATES else None
    chosen = select(idea, template)
    forms = noun_forms(app_noun(idea, template, [f.key for f in chosen]))
    features = [
        Feature(
            key=f.key,
            feature=f.text.format(**forms),
            priority=f.priority,
            notes=f.notes.format(**forms),
        )
        for f in chosen
    ]
    planned = resolve(features, forms)
    files = [FileSpec(path=p, purpose=purpose) for p, purpose in layout(planned)]
    return Plan(
        summary=_summary(idea, template, forms),
        features=features,
        files=files,
        tables=_tables(chosen, template),
        template=template,
    )
