"""The offline plan provider: deterministic templates that still produce a working app.

Same idea in, same plan out — so local runs and tests are reproducible with no model and no
network. The app is a small single-page tool named after the idea: add, search, complete and
remove entries, kept in the browser's storage. No build step: `index.html` opens as is.
"""

from __future__ import annotations

import html
import json
import re

from schemas.api import SpawnConfig
from schemas.plan import Column, Feature, Plan, PlannedFile, Table

_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "for",
        "with",
        "to",
        "of",
        "in",
        "on",
        "app",
        "apps",
        "my",
        "your",
        "our",
        "that",
        "this",
        "is",
        "it",
        "by",
        "from",
        "ai",
        "based",
        "using",
        "use",
        "new",
        "simple",
        "smart",
    ]
)
_EXTRAS = {
    "food": Feature(feature="Tag entries by ingredient", priority="medium"),
    "recipe": Feature(feature="Tag entries by ingredient", priority="medium"),
    "fitness": Feature(feature="Track a weekly goal", priority="medium"),
    "finance": Feature(feature="Show a running total", priority="medium"),
    "task": Feature(feature="Order entries by due date", priority="medium"),
    "travel": Feature(feature="Group entries by destination", priority="medium"),
}


def _noun(idea: SpawnConfig) -> str:
    words = re.findall(r"[a-zA-Z]+", idea.title.lower())
    useful = [w for w in words if w not in _STOP]
    return (useful[0] if useful else "item")[:30]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "items"


class OfflineProvider:
    """Plans from templates; see the module docstring."""

    name = "offline"

    async def plan(self, idea: SpawnConfig) -> Plan:
        """The plan and files for `idea`."""
        noun = _noun(idea)
        features = [
            Feature(feature=f"Add a {noun} with a title and notes", priority="high"),
            Feature(feature=f"List and search {noun}s", priority="high"),
            Feature(feature=f"Mark a {noun} done, or remove it", priority="medium"),
            Feature(
                feature="Keep data in the browser between visits",
                priority="medium",
                notes="localStorage; a Supabase table is planned for sync",
            ),
        ]
        text = f"{idea.title} {idea.description or ''} {idea.category or ''}".lower()
        for key, extra in _EXTRAS.items():
            if key in text and extra not in features:
                features.append(extra)
        table = Table(
            name=_slug(noun) + "s",
            columns=[
                Column(name="id", type="uuid"),
                Column(name="user_id", type="uuid"),
                Column(name="title", type="text"),
                Column(name="notes", type="text"),
                Column(name="done", type="boolean"),
                Column(name="created_at", type="timestamptz"),
            ],
        )
        summary = (
            f"{idea.title}: a single-page app to keep track of {noun}s"
            + (f" — {idea.description.strip()}" if idea.description else "")
        )[:5000]
        return Plan(
            summary=summary,
            features=features,
            files=_files(idea, noun, features),
            tables=[table],
        )


def _files(idea: SpawnConfig, noun: str, features: list[Feature]) -> list[PlannedFile]:
    title = html.escape(idea.title)
    description = html.escape(idea.description or f"Keep track of your {noun}s.")
    storage_key = "myyc:" + _slug(idea.title)
    index = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="stylesheet" href="styles.css">
</head>
<body>
  <main>
    <h1>{title}</h1>
    <p class="lead">{description}</p>
    <form id="add">
      <input id="title" placeholder="New {html.escape(noun)}" required maxlength="200">
      <input id="notes" placeholder="Notes" maxlength="1000">
      <button type="submit">Add</button>
    </form>
    <input id="search" type="search" placeholder="Search {html.escape(noun)}s">
    <ul id="list"></ul>
    <p id="empty">No {html.escape(noun)}s yet.</p>
  </main>
  <script src="app.js"></script>
</body>
</html>
"""
    app = f"""// {idea.title}: add, search, complete and remove {noun}s; kept in localStorage.
const KEY = {json.dumps(storage_key)};
const load = () => JSON.parse(localStorage.getItem(KEY) || "[]");
const save = (items) => localStorage.setItem(KEY, JSON.stringify(items));

function render() {{
  const query = document.getElementById("search").value.toLowerCase();
  const items = load().filter((i) => (i.title + " " + i.notes).toLowerCase().includes(query));
  const list = document.getElementById("list");
  list.replaceChildren(...items.map((item) => {{
    const li = document.createElement("li");
    li.className = item.done ? "done" : "";
    const label = document.createElement("span");
    label.textContent = item.notes ? `${{item.title}} — ${{item.notes}}` : item.title;
    label.onclick = () => {{ save(load().map((i) => i.id === item.id ? {{...i, done: !i.done}} : i)); render(); }};
    const remove = document.createElement("button");
    remove.textContent = "×";
    remove.onclick = () => {{ save(load().filter((i) => i.id !== item.id)); render(); }};
    li.append(label, remove);
    return li;
  }}));
  document.getElementById("empty").hidden = items.length > 0;
}}

document.getElementById("add").onsubmit = (event) => {{
  event.preventDefault();
  const title = document.getElementById("title");
  const notes = document.getElementById("notes");
  save([...load(), {{id: crypto.randomUUID(), title: title.value, notes: notes.value, done: false,
                     created_at: new Date().toISOString()}}]);
  title.value = ""; notes.value = "";
  render();
}};
document.getElementById("search").oninput = render;
render();
"""
    styles = """body { font-family: system-ui, sans-serif; margin: 0; background: #f6f7f9; }
main { max-width: 40rem; margin: 3rem auto; padding: 0 1rem; }
h1 { margin-bottom: .25rem; }
.lead { color: #555; }
form { display: flex; gap: .5rem; margin: 1rem 0; }
input { flex: 1; padding: .5rem; border: 1px solid #ccc; border-radius: .375rem; }
button { padding: .5rem .75rem; border: 0; border-radius: .375rem; background: #4f46e5; color: #fff; }
ul { list-style: none; padding: 0; }
li { display: flex; justify-content: space-between; padding: .5rem; background: #fff;
     margin: .25rem 0; border-radius: .375rem; cursor: pointer; }
li.done span { text-decoration: line-through; color: #999; }
"""
    readme = "\n".join(
        [f"# {idea.title}", "", idea.description or "", "", "## Plan", ""]
        + [f"- [{f.priority}] {f.feature}" for f in features]
        + ["", "Open `index.html` in a browser; no build step.", "", "Generated by myyc."]
    )
    package = {
        "name": _slug(idea.title).replace("_", "-") or "app",
        "private": True,
        "version": "0.1.0",
        "scripts": {"start": "npx --yes serve ."},
    }
    return [
        PlannedFile(path="index.html", content=index),
        PlannedFile(path="app.js", content=app),
        PlannedFile(path="styles.css", content=styles),
        PlannedFile(path="README.md", content=readme + "\n"),
        PlannedFile(path="package.json", content=json.dumps(package, indent=2) + "\n"),
    ]
