"""The app's files for a plan: index.html composed from the planned features' sections, the
fixed scripts and stylesheet from `assets/`, a README and a package.json.

The idea's text reaches exactly two places: HTML text (`html_text`: escaped, quotes too, line
breaks as character references) and the JSON block `#app-config` (`json_block`: `<`, `>`, `&`
and every non-ASCII character escaped). Scripts and styles are static files; paths, storage
keys and the package name are derived from library keys and [a-z0-9_] slugs only.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from local.offline_app import sections
from local.offline_app.ideas import Idea, plain_words, slug
from local.offline_app.library import (
    FEATURES,
    LibraryFeature,
    app_noun,
    noun_forms,
    with_requirements,
)
from schemas.plan import Feature, Plan

GENERIC = "notes"
"""The script for planned features the library does not know."""
_BREAKS = {"\n": "&#10;", "\r": "&#13;", "\u2028": "&#8232;", "\u2029": "&#8233;"}
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MARKDOWN_SAFE = re.compile(r"[A-Za-z0-9 ,.;:()'/-]*")

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="stylesheet" href="styles.css">
</head>
<body>
  <header class="top">
    <h1>{title}</h1>
    <p class="lead">{lead}</p>
{category}  </header>
  <main class="grid">
{sections}
  </main>
  <script type="application/json" id="app-config">{config}</script>
{scripts}
</body>
</html>
"""


def html_text(value: str) -> str:
    """`value` as HTML text or a quoted attribute value: escaped, on one line.

    Control characters other than tab and line breaks are dropped; line breaks (including
    U+2028 and U+2029) become character references, so no line of a file is user text.
    """
    escaped = html.escape(_CONTROLS.sub("", value), quote=True)
    return "".join(_BREAKS.get(c, c) for c in escaped)


def json_block(value: Any) -> str:
    """`value` as JSON that is safe inside `<script type="application/json">`."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True, slots=True)
class Planned:
    """A planned feature and its library entry (None: built as a generic notes section)."""

    key: str
    """The feature key (the plan's, or a requirement's)."""
    text: str
    """What the feature does, as the plan says."""
    lib: LibraryFeature | None
    """How the library builds it; None for a key it does not know."""

    @property
    def module(self) -> str:
        """Its script: js/<module>.js."""
        return self.lib.module if self.lib else GENERIC


def resolve(features: Sequence[Feature], forms: Mapping[str, str]) -> list[Planned]:
    """The plan's features, then the library features they require and the plan lacks."""
    given = {f.key: f.feature for f in features}
    planned = []
    for key in with_requirements(given):
        text = given[key] if key in given else FEATURES[key].text.format(**forms)
        planned.append(Planned(key, text, FEATURES.get(key)))
    return planned


def _modules(planned: Sequence[Planned]) -> list[str]:
    """The scripts to load, in library order (so a script's helpers load before it)."""
    used = {p.module for p in planned}
    ordered = list(dict.fromkeys(f.module for f in FEATURES.values() if f.module in used))
    return ordered + ([GENERIC] if GENERIC in used else [])


def layout(planned: Sequence[Planned]) -> list[tuple[str, str]]:
    """The app's files for these features, each with what it is for."""
    scripts = []
    for module in _modules(planned):
        does = "; ".join(p.text for p in planned if p.module == module)
        purpose = f"Notes sections for: {does}" if module == GENERIC else does
        scripts.append((f"js/{module}.js", purpose[:1000]))
    return [
        ("index.html", "The page: one section per feature, marked with data-feature"),
        ("styles.css", "The styles of every section"),
        ("js/core.js", "Storage, the local user, change notifications, DOM helpers"),
        *scripts,
        ("app.js", "Starts the app: mounts each feature's code on its section"),
        ("README.md", "What the app does and how to open it"),
        ("package.json", "A start script that serves the folder"),
    ]


def asset(name: str) -> str:
    """A static file of the generated app (a script or the stylesheet)."""
    return resources.files("local.offline_app").joinpath("assets", name).read_text("utf-8")


def _section(item: Planned, forms: dict[str, str], fields: str) -> str:
    if item.lib is None:
        inner = sections.NOTES.format(heading=html_text(item.text))
    else:
        inner = item.lib.section.format(fields=fields, **forms)
    css = "card wide" if item.lib and item.lib.wide else "card"
    body = "\n".join(f"      {line}" if line else "" for line in inner.splitlines())
    return f'    <section class="{css}" data-feature="{item.key}">\n{body}\n    </section>'


def _config(idea: Idea, plan: Plan, planned: Sequence[Planned], forms: dict[str, str]) -> str:
    return json_block(
        {
            "title": idea.title,
            "description": idea.description,
            "category": idea.category,
            "template": plan.template,
            "noun": forms["noun"],
            "nouns": forms["nouns"],
            "slug": slug(idea.title),
            "features": [
                {"key": p.key, "feature": p.text, "module": p.module, "store": slug(p.key, "f")}
                for p in planned
            ],
        }
    )


def _page(idea: Idea, plan: Plan, planned: Sequence[Planned], forms: dict[str, str]) -> str:
    escaped = {k: html.escape(v) for k, v in forms.items()}
    fields = "".join(p.lib.field for p in planned if p.lib and p.lib.field)
    lead = idea.description or f"Keep track of your {forms['nouns']}."
    category = (
        f'    <p class="category">Category: {html_text(idea.category)}</p>\n'
        if idea.category
        else ""
    )
    scripts = [f"js/{m}.js" for m in ["core", *_modules(planned)]] + ["app.js"]
    return _PAGE.format(
        title=html_text(idea.title),
        lead=html_text(lead),
        category=category,
        sections="\n".join(_section(p, escaped, fields) for p in planned),
        config=_config(idea, plan, planned, forms),
        scripts="\n".join(f'  <script src="{src}"></script>' for src in scripts),
    )


def _markdown(text: str) -> str:
    return text if _MARKDOWN_SAFE.fullmatch(text) else plain_words(text, "A feature")


def _readme(idea: Idea, plan: Plan, planned: Sequence[Planned]) -> str:
    priority = {f.key: f.priority for f in plan.features}
    lines = [
        f"# {plain_words(idea.title)}",
        "",
        "A small single-page app generated by myyc from an idea. Open `index.html` in a"
        " browser: no build step, no server needed. Data stays in the browser (localStorage).",
        "",
        "## Features",
        "",
        *(f"- [{priority.get(p.key, 'medium')}] {_markdown(p.text)} (`{p.key}`)" for p in planned),
        "",
        'Each feature\'s section in `index.html` is marked `data-feature="<key>"`; its code'
        " is in `js/`.",
    ]
    return "\n".join(lines) + "\n"


def _package(idea: Idea) -> str:
    package = {
        "name": slug(idea.title).replace("_", "-"),
        "private": True,
        "version": "0.1.0",
        "scripts": {"start": "npx --yes serve ."},
    }
    return json.dumps(package, indent=2) + "\n"


def app_files(plan: Plan, idea: Idea) -> dict[str, str]:
    """Every file of the app for `plan` (path → content), in a fixed order."""
    keys = with_requirements(f.key for f in plan.features)
    forms = noun_forms(app_noun(idea, plan.template, keys))
    planned = resolve(plan.features, forms)
    content = {
        "index.html": _page(idea, plan, planned, forms),
        "styles.css": asset("styles.css"),
        **{f"js/{m}.js": asset(f"{m}.js") for m in ["core", *_modules(planned)]},
        "app.js": asset("app.js"),
        "README.md": _readme(idea, plan, planned),
        "package.json": _package(idea),
    }
    order = [path for path, _ in layout(planned)]
    return {path: content[path] for path in order}
