"""The offline provider: plans from the feature library, and apps that implement every feature.

The generated apps are checked as files (HTML nesting, JSON blocks, `node --check`, the
verifier's own checks) and as programs: a small node harness builds the page in a fake DOM,
boots the app's scripts and uses every planned feature — adds entries, plans meals, bids,
invites — asserting on the page and on what was stored.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from agents.checks import check_features, check_html, check_js
from agents.filestream import parse_files
from agents.providers import Message, ModelError, ModelRequest, Purpose
from local.offline_app.library import FEATURES
from local.offline_app.render import asset
from local.offline_llm import OfflineProvider, chunks
from schemas.plan import Plan

NODE = shutil.which("node") or "/usr/bin/node"
RECIPE = {"title": "AI Recipe App", "description": "Save recipes and plan meals", "category": None}
MARKET = {"title": "Vintage Bike Market", "description": "Sell old bikes", "category": "Sports"}
SAAS = {"title": "Client Notes", "description": "Notes about clients", "category": "Business"}
EVERYTHING = {
    "title": "Life Planner",
    "description": "Recipes, workouts, a budget, tasks with deadlines and travel plans",
    "category": "Lifestyle",
}
APPS = [
    pytest.param(RECIPE, None, id="recipes"),
    pytest.param(EVERYTHING, None, id="everything"),
    pytest.param({"title": "Bird Log", "description": None, "category": None}, None, id="plain"),
    pytest.param(MARKET, "marketplace", id="marketplace"),
    pytest.param(SAAS, "saas", id="saas"),
    pytest.param(RECIPE, "saas", id="saas-recipes"),
]
HOSTILE = [
    'Recipes\nalert("pwned")//',
    "Line\u2028break\u2029paragraph",
    "</script><script>alert(1)</script>",
    '"; alert(1); "',
    "`${x}` and ${document.cookie}",
    "<!-- open comment",
    "../../etc/passwd",
    "'single' & \"double\" <b>bold</b>\r\n@@end\n@@file x.js",
]
FIXED_PATHS = {
    "index.html",
    "styles.css",
    "README.md",
    "package.json",
    "js/core.js",
    "app.js",
    "js/notes.js",
    *(f"js/{f.module}.js" for f in FEATURES.values()),
}
_VOID = frozenset(
    re.findall(r"\w+", "area base br col embed hr img input link meta source track wbr")
)


def _request(purpose: Purpose, **context: Any) -> ModelRequest:
    return ModelRequest(purpose, [Message("user", json.dumps(context))], context=context)


async def plan_for(idea: dict[str, Any], template: str | None = None) -> Plan:
    completion = await OfflineProvider().complete(_request("plan", idea=idea, template=template))
    return Plan.model_validate_json(completion.text)


async def code_for(plan: Plan, idea: dict[str, Any]) -> dict[str, str]:
    request = _request("code", plan=plan.model_dump(mode="json"), idea=idea, feedback=[])
    completion = await OfflineProvider().complete(request)
    files, rejected = parse_files(completion.text)
    assert rejected == []
    return {f.path: f.content for f in files}


async def build(idea: dict[str, Any], template: str | None = None) -> tuple[Plan, dict[str, str]]:
    plan = await plan_for(idea, template)
    return plan, await code_for(plan, idea)


# ------------------------------------------------------------------------- file checks


class Tree(HTMLParser):
    """The page as nested JSON (for the node harness); end tags must close the open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: dict[str, Any] = {"tag": "#document", "attrs": {}, "children": []}
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = {"tag": tag, "attrs": {k: v or "" for k, v in attrs}, "children": []}
        self.stack[-1]["children"].append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1]["tag"] == tag, f"</{tag}> closes <{self.stack[-1]['tag']}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1]["children"].append(data)


def page_tree(text: str) -> dict[str, Any]:
    tree = Tree()
    tree.feed(text)
    tree.close()
    assert tree.stack == [tree.root], "elements left open"
    return tree.root


def find(node: dict[str, Any], **attrs: str) -> list[dict[str, Any]]:
    found = []
    for child in node["children"]:
        if isinstance(child, dict):
            if all(child["attrs"].get(k.replace("_", "-")) == v for k, v in attrs.items()):
                found.append(child)
            found += find(child, **attrs)
    return found


def text_of(node: dict[str, Any]) -> str:
    return "".join(c if isinstance(c, str) else text_of(c) for c in node["children"])


def json_blocks(page: str) -> list[Any]:
    blocks = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)
    return [json.loads(block) for block in blocks]


_checked: set[str] = set()


def node_check(files: dict[str, str], tmp_path: Path) -> None:
    """`node --check` on each script (classic scripts, as the page loads them); once per text."""
    if not Path(NODE).exists():
        pytest.fail("node is required (the generated apps' scripts are checked with it)")
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).hexdigest()
        if not path.endswith(".js") or digest in _checked:
            continue
        target = tmp_path / "check" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        result = subprocess.run(
            [NODE, "--check", str(target)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{path}: {result.stderr}"
        _checked.add(digest)


def write_app(files: dict[str, str], root: Path) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


# ------------------------------------------------------------------------------ plans


@pytest.mark.parametrize(
    ("idea", "template", "expected", "noun"),
    [
        (RECIPE, None, {"meal-plan", "ingredient-tags", "shopping-list"}, "recipe"),
        (
            {"title": "Gym Buddy", "description": "Log my workouts", "category": "Fitness"},
            None,
            {"weekly-goal"},
            "workout",
        ),
        (
            {"title": "Budget Tracker", "description": "Monthly expenses", "category": None},
            None,
            {"running-total"},
            "expense",
        ),
        (
            {"title": "Team Todo", "description": "Tasks with deadlines", "category": None},
            None,
            {"due-dates"},
            "task",
        ),
        (
            {"title": "Trip Planner", "description": "Where next?", "category": "Travel"},
            None,
            {"destinations"},
            "trip",
        ),
        ({"title": "Bird Log", "description": None, "category": None}, None, set(), "bird"),
        (SAAS, "saas", {"pricing-plans", "team-members", "usage-meter"}, "client"),
    ],
)
async def test_keywords_choose_the_features(
    idea: dict[str, Any], template: str | None, expected: set[str], noun: str
) -> None:
    plan = await plan_for(idea, template)
    base = {"add-entry", "search-entries", "complete-entries", "keep-entries"}
    assert {f.key for f in plan.features} == base | expected
    assert plan.features[0].feature == f"Add a {noun} with a title and notes"
    assert plan.template == template


async def test_the_recipe_idea_plans_meals() -> None:
    plan = await plan_for(RECIPE)
    meal = next(f for f in plan.features if f.key == "meal-plan")
    assert "Monday to Sunday" in meal.feature
    assert meal.priority == "high"
    ranks = [("high", "medium", "low").index(f.priority) for f in plan.features]
    assert ranks == sorted(ranks), "most important first"
    assert "js/meal-plan.js" in [f.path for f in plan.files]


async def test_a_marketplace_plan_has_listings_bids_orders_with_owners() -> None:
    plan = await plan_for(MARKET, "marketplace")
    assert [f.key for f in plan.features] == ["listings", "bids", "orders", "local-user"]
    tables = {t.name: {c.name for c in t.columns} for t in plan.tables}
    assert {"listings", "bids", "orders"} <= set(tables)
    assert "owner_id" in tables["listings"]
    assert {"user_id", "listing_id", "amount_cents"} <= tables["bids"]
    assert {"user_id", "listing_id"} <= tables["orders"]


async def test_tables_follow_the_features() -> None:
    plain = await plan_for({"title": "Bird Log"})
    assert [t.name for t in plain.tables] == ["entries"]
    saas = await plan_for(SAAS, "saas")
    assert {t.name for t in saas.tables} == {"entries", "accounts", "subscriptions", "members"}
    everything = await plan_for(EVERYTHING)
    entries = next(t for t in everything.tables if t.name == "entries")
    columns = {c.name for c in entries.columns}
    assert {"user_id", "tags", "amount_cents", "due_date", "destination"} <= columns


async def test_an_unknown_template_plans_a_plain_app() -> None:
    plan = await plan_for(RECIPE, "spaceship")
    assert plan.template is None
    assert "listings" not in {f.key for f in plan.features}


# ------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(("idea", "template"), APPS)
async def test_every_planned_feature_is_in_the_files(
    idea: dict[str, Any], template: str | None, tmp_path: Path
) -> None:
    plan, files = await build(idea, template)
    assert len(plan.features) >= 3
    assert list(files) == [f.path for f in plan.files]
    page = files["index.html"]
    tree = page_tree(page)
    for feature in plan.features:
        assert len(find(tree, data_feature=feature.key)) == 1, feature.key
    scripts = [
        n["attrs"]["src"] for n in find(tree) if n["tag"] == "script" and n["attrs"].get("src")
    ]
    assert set(scripts) == {p for p in files if p.endswith(".js")}
    (config,) = json_blocks(page)
    assert [f["key"] for f in config["features"]] == [f.key for f in plan.features]
    assert re.fullmatch(r"[a-z0-9_]+", config["slug"])
    json.loads(files["package.json"])
    for path, text in files.items():
        if path.endswith(".js"):  # data is shown through textContent and value only
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in text, (path, sink)
    assert not any(re.search(r"\{(noun|Noun|fields|heading)", text) for text in files.values())
    node_check(files, tmp_path)


@pytest.mark.parametrize(("idea", "template"), APPS)
async def test_the_verifier_checks_pass(idea: dict[str, Any], template: str | None) -> None:
    plan, files = await build(idea, template)
    assert check_html(files).passed
    assert check_features(plan, files).passed
    checked = await check_js(files, node=NODE)
    assert checked.passed, checked.detail
    assert not checked.data["skipped"]


async def test_a_plan_from_another_provider_still_works(tmp_path: Path) -> None:
    """Unknown keys become notes sections; a library feature's requirements come along."""
    plan = Plan.model_validate(
        {
            "summary": "Photos",
            "features": [
                {"key": "photo-gallery", "feature": "</script><b>Gallery</b> & ${x}"},
                {"key": "meal-plan", "feature": "Plan dinners"},
            ],
            "files": [{"path": "src/App.tsx"}],
        }
    )
    files = await code_for(plan, {"title": "Photos"})
    tree = page_tree(files["index.html"])
    (gallery,) = find(tree, data_feature="photo-gallery")
    assert text_of(gallery).strip().startswith("</script><b>Gallery</b> & ${x}")
    assert "</script><b>" not in files["index.html"]
    for key in ("meal-plan", "add-entry", "search-entries"):
        assert find(tree, data_feature=key), key
    assert "js/notes.js" in files
    assert "Add a recipe with a title and notes" in files["README.md"], "requirements named"
    assert not any(re.search(r"\{(noun|Noun|fields|heading)", text) for text in files.values())
    assert check_features(plan, files).passed
    node_check(files, tmp_path)
    run_app(files, tmp_path, {"photo-gallery", "meal-plan", "add-entry", "search-entries"})


# ------------------------------------------------------------------------ hostile text


@pytest.mark.parametrize("template", [None, "marketplace", "saas"])
@pytest.mark.parametrize("text", HOSTILE)
async def test_the_idea_text_is_data_never_code(text: str, template: str | None) -> None:
    idea = {"title": text, "description": "About: " + text, "category": text}
    plan, files = await build(idea, template)
    assert list(files) == [f.path for f in plan.files]
    assert set(files) <= FIXED_PATHS, "paths never depend on the text"
    for path, content in files.items():
        if path.endswith((".js", ".css")):
            assert content == asset(path.removeprefix("js/")), f"{path} depends on the text"
        elif path != "index.html":
            for raw in (text, "\u2028", "\u2029", "alert(", "<!--", "${x}", "../", "@@"):
                assert raw not in content or raw not in text, (path, raw)
    page = files["index.html"]
    tree = page_tree(page)
    scripts = [n for n in find(tree) if n["tag"] == "script"]
    assert page.count("<script") == page.count("</script>") == len(scripts)
    (h1,) = [n for n in find(tree) if n["tag"] == "h1"]
    assert text_of(h1) == text, "escaped in the page, and read back exactly"
    escaped = html.escape(text, quote=True)
    if escaped != text:
        assert text not in page
    for line in page.splitlines():
        assert not line.lstrip().startswith("@@")
    (config,) = json_blocks(page)
    assert (config["title"], config["description"], config["category"]) == (
        text,
        "About: " + text,
        text,
    )
    block = re.search(r'id="app-config">(.*?)</script>', page, re.S)
    assert block is not None
    assert block.group(1).isascii()
    assert "<" not in block.group(1)
    assert re.fullmatch(r"[a-z0-9_]+", config["slug"])


# ----------------------------------------------------------------- the apps, running

HARNESS = r"""
"use strict";
const assert = require("assert");
const fs = require("fs");
const path = require("path");
const input = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

class Text {
  constructor(data) { this.data = data; this.parentNode = null; }
  get textContent() { return this.data; }
}
class El {
  constructor(doc, tag, attrs) {
    Object.assign(this, { ownerDocument: doc, tag, attrs: Object.assign({}, attrs || {}),
      children: [], parentNode: null, listeners: {}, disabled: false, checked: false });
    this.hidden = "hidden" in this.attrs;
    this.value = this.attrs.value || "";
    this.className = this.attrs.class || "";
  }
  getAttribute(name) { return name in this.attrs ? this.attrs[name] : null; }
  setAttribute(name, value) { this.attrs[name] = String(value); }
  append(...items) {
    for (const item of items) {
      const node = typeof item === "string" ? new Text(item) : item;
      const old = node.parentNode;
      if (old) old.children.splice(old.children.indexOf(node), 1);
      node.parentNode = this;
      this.children.push(node);
    }
  }
  replaceChildren(...items) {
    for (const child of this.children) child.parentNode = null;
    this.children = [];
    this.append(...items);
  }
  get textContent() { return this.children.map((c) => c.textContent).join(""); }
  set textContent(value) { this.replaceChildren(String(value)); }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  dispatch(type) {
    const event = { type, target: this, preventDefault() { this.prevented = true; } };
    for (const fn of this.listeners[type] || []) fn(event);
    return event;
  }
  click() { this.dispatch("click"); }
  *walk() { for (const c of this.children) if (c instanceof El) { yield c; yield* c.walk(); } }
  querySelectorAll(selector) {
    return Array.from(this.walk()).filter((el) => matches(el, selector));
  }
  querySelector(selector) { return this.querySelectorAll(selector)[0] || null; }
}
class Doc extends El {
  constructor() { super(null, "#document", {}); this.ownerDocument = this; }
  createElement(tag) { return new El(this, tag, {}); }
  getElementById(id) { return Array.from(this.walk()).find((el) => el.attrs.id === id) || null; }
}
function simple(el, selector) {
  const re = /([a-z][a-z0-9]*)|#([\w-]+)|\.([\w-]+)|\[([\w-]+)(?:="([^"]*)")?\]/gy;
  let match;
  let at = 0;
  while (at < selector.length && (match = re.exec(selector))) {
    at = re.lastIndex;
    if (match[1] && el.tag !== match[1]) return false;
    if (match[2] && el.attrs.id !== match[2]) return false;
    if (match[3] && !el.className.split(/\s+/).includes(match[3])) return false;
    if (match[4] && (match[5] === undefined ? !(match[4] in el.attrs)
      : el.attrs[match[4]] !== match[5])) return false;
  }
  assert.equal(at, selector.length, "selector not supported by the fake DOM: " + selector);
  return true;
}
function matches(el, selector) {
  const parts = selector.trim().split(/\s+/);
  if (!simple(el, parts[parts.length - 1])) return false;
  let i = parts.length - 2;
  for (let node = el.parentNode; node && i >= 0; node = node.parentNode) {
    if (node instanceof El && simple(node, parts[i])) i--;
  }
  return i < 0;
}
function build(doc, parent, node) {
  for (const child of node.children) {
    if (typeof child === "string") { parent.append(child); continue; }
    const el = new El(doc, child.tag, child.attrs);
    parent.append(el);
    build(doc, el, child);
  }
  return doc;
}

for (const src of input.scripts) require(path.join(input.dir, src));
const M = globalThis.MYYC;
const storage = M.memoryStorage();
let ids = 0;
const options = { clock: () => new Date(2025, 2, 5, 12), newId: () => "id-" + ++ids };
const page = () => { const d = new Doc(); return build(d, d, input.tree); };
const doc = page();
const app = M.boot(doc, storage, options);
const config = app.config;
const exercised = new Set();
const has = (key) => doc.querySelector('[data-feature="' + key + '"]') !== null;
const $ = (selector) => {
  const el = doc.querySelector(selector);
  assert.ok(el, "missing " + selector);
  return el;
};
const part = (key, name) => $('[data-feature="' + key + '"] [data-part="' + name + '"]');
const stored = (name, fallback) => {
  const raw = storage.getItem("myyc:" + config.slug + ":" + name);
  return raw === null ? fallback : JSON.parse(raw);
};
const button = (scope, label) => {
  const found = scope.querySelectorAll("button").find((b) => b.textContent === label);
  assert.ok(found, "no button " + label + " in " + scope.textContent);
  return found;
};
const entries = () => stored("entries", []);
const idOf = (title) => entries().find((e) => e.title === title).id;
const items = () => part("search-entries", "list").querySelectorAll("li");
const item = (title) => items().find((li) => li.textContent.includes(title));
const texts = (nodes) => nodes.map((n) => n.textContent);

function add(title, fields) {
  part("add-entry", "title").value = title;
  part("add-entry", "notes").value = "about " + title;
  for (const [name, value] of Object.entries(fields)) {
    const input = doc.querySelector('[data-feature="add-entry"] [data-field="' + name + '"]');
    if (input) input.value = value;
  }
  part("add-entry", "form").dispatch("submit");
}

if (has("add-entry")) {
  add("Pancakes", { tags: "Eggs, flour, milk", amount_cents: "12.50", due_date: "2025-03-01",
    destination: "Lisbon" });
  add("Omelette", { tags: "eggs; cheese", amount_cents: "-2.25", due_date: "2025-03-10",
    destination: "Porto" });
  assert.equal(part("add-entry", "title").value, "", "the form is cleared");
  add("  ", {});
  assert.equal(part("add-entry", "message").textContent, "Give it a title first.");
  assert.deepEqual(entries().map((e) => e.title), ["Pancakes", "Omelette"]);
  exercised.add("add-entry");
}
if (has("search-entries")) {
  assert.equal(items().length, 2);
  const search = part("search-entries", "search");
  search.value = "OMEL";
  search.dispatch("input");
  assert.deepEqual(items().map((li) => li.querySelector("strong").textContent), ["Omelette"]);
  search.value = "";
  search.dispatch("input");
  assert.equal(part("search-entries", "empty").hidden, true);
  exercised.add("search-entries");
}
if (has("due-dates")) {
  const titles = texts(items().map((li) => li.querySelector("strong")));
  assert.deepEqual(titles, ["Pancakes", "Omelette"]);
  assert.ok(item("Pancakes").textContent.includes("overdue since 2025-03-01"));
  assert.ok(part("due-dates", "next").textContent.includes("Pancakes"));
  assert.equal(part("due-dates", "overdue").textContent, "1 overdue");
  exercised.add("due-dates");
}
if (has("complete-entries")) {
  button(item("Pancakes"), "Done").click();
  assert.equal(entries()[0].done, true);
  assert.ok(entries()[0].done_at.startsWith("2025-03-05"));
  assert.equal(item("Pancakes").className, "item done");
  assert.ok(part("complete-entries", "progress").textContent.startsWith("1 of 2 "));
  exercised.add("complete-entries");
  if (has("due-dates")) {
    assert.deepEqual(texts(items().map((li) => li.querySelector("strong"))),
      ["Omelette", "Pancakes"]);
  }
}
if (has("weekly-goal")) {
  assert.ok(part("weekly-goal", "status").textContent.startsWith("1 of 3 "));
  assert.equal(part("weekly-goal", "bar").value, 33);
  part("weekly-goal", "target").value = "1";
  part("weekly-goal", "target").dispatch("change");
  assert.deepEqual(stored("weekly-goal"), { target: 1 });
  assert.ok(part("weekly-goal", "status").textContent.startsWith("Goal reached"));
  exercised.add("weekly-goal");
}
if (has("running-total")) {
  assert.equal(part("running-total", "total").textContent, "10.25");
  const rows = part("running-total", "ledger").querySelectorAll("li");
  assert.deepEqual(rows.map((r) => r.querySelector(".total").textContent), ["12.50", "10.25"]);
  exercised.add("running-total");
}
if (has("destinations")) {
  const groups = part("destinations", "groups").querySelectorAll("h3");
  assert.deepEqual(texts(groups), ["Lisbon", "Porto"]);
  exercised.add("destinations");
}
if (has("ingredient-tags")) {
  const filter = part("ingredient-tags", "filter");
  assert.deepEqual(filter.querySelectorAll("option").map((o) => o.value),
    ["", "cheese", "eggs", "flour", "milk"]);
  filter.value = "cheese";
  filter.dispatch("change");
  assert.deepEqual(texts(items().map((li) => li.querySelector("strong"))), ["Omelette"]);
  button(part("ingredient-tags", "tags"), "cheese").click();
  assert.equal(items().length, 2);
  exercised.add("ingredient-tags");
}
if (has("meal-plan")) {
  const pick = (day, title) => {
    const select = $('[data-feature="meal-plan"] select[data-day="' + day + '"]');
    select.value = idOf(title);
    select.dispatch("change");
  };
  pick("Mon", "Pancakes");
  pick("Tue", "Omelette");
  pick("Wed", "Pancakes");
  pick("Mon", "Pancakes");
  const week = stored("meal-plan");
  assert.deepEqual(Object.keys(week), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]);
  assert.deepEqual([week.Mon, week.Tue, week.Wed, week.Sun],
    [[idOf("Pancakes")], [idOf("Omelette")], [idOf("Pancakes")], []]);
  const monday = $('[data-feature="meal-plan"] div[data-day="Mon"]');
  assert.equal(monday.querySelector("h3").textContent, "Monday");
  assert.equal(monday.querySelector("ul").textContent.replace("×", ""), "Pancakes");
  exercised.add("meal-plan");
}
if (has("shopping-list")) {
  const list = () => texts(part("shopping-list", "items").querySelectorAll("span"));
  assert.deepEqual(list(), ["cheese", "eggs ×3", "flour ×2", "milk ×2"]);
  button($('[data-feature="meal-plan"] div[data-day="Wed"]'), "×").click();
  assert.deepEqual(stored("meal-plan").Wed, []);
  assert.deepEqual(list(), ["cheese", "eggs ×2", "flour", "milk"]);
  const box = part("shopping-list", "items").querySelectorAll("input")[1];
  box.checked = true;
  box.dispatch("change");
  assert.deepEqual(stored("shopping-checked"), ["eggs"]);
  assert.equal(part("shopping-list", "items").querySelectorAll("li")[1].className, "checked");
  exercised.add("shopping-list");
}
if (has("keep-entries")) {
  assert.ok(part("keep-entries", "status").textContent.startsWith("2 "));
  part("keep-entries", "backup").click();
  assert.equal(JSON.parse(part("keep-entries", "dump").value).length, 2);
  const second = page();
  M.boot(second, storage, options);
  const list = second.querySelector('[data-feature="search-entries"] [data-part="list"]');
  assert.equal(list.querySelectorAll("li").length, 2, "still there on the next visit");
  exercised.add("keep-entries");
}
if (has("pricing-plans")) {
  const cards = () => part("pricing-plans", "plans").querySelectorAll("div");
  assert.deepEqual(cards().map((c) => c.getAttribute("data-plan")), ["free", "pro", "team"]);
  assert.equal(button(cards()[0], "Current plan").disabled, true);
  exercised.add("pricing-plans");
  if (has("team-members")) {
    const invite = (email) => {
      part("team-members", "email").value = email;
      part("team-members", "form").dispatch("submit");
      return part("team-members", "message").textContent;
    };
    assert.ok(invite("ada@example.com").startsWith("The Free plan has 1 seat"));
    button(cards()[1], "Choose Pro").click();
    assert.equal(stored("subscription").plan, "pro");
    assert.equal(invite("Ada@Example.com"), "");
    assert.equal(invite("ada@example.com"), "Already invited.");
    assert.equal(invite("nope"), "Enter an email address.");
    assert.equal(part("team-members", "seats").textContent, "2 of 5 seats used.");
    button(cards()[0], "Choose Free").click();
    assert.ok(part("pricing-plans", "message").textContent.includes("remove members first"));
    button(part("team-members", "list"), "Remove").click();
    assert.deepEqual(stored("members"), []);
    button(cards()[0], "Choose Free").click();
    assert.equal(stored("subscription").plan, "free");
    exercised.add("team-members");
  }
  if (has("usage-meter")) {
    const count = entries().length;
    assert.ok(part("usage-meter", "status").textContent.startsWith(count + " of 10 "));
    for (let i = count; i < 12; i++) add("Extra " + i, {});
    assert.equal(entries().length, 10, "the Free plan stops at 10");
    assert.ok(part("add-entry", "message").textContent.includes("Free plan holds 10"));
    assert.equal(part("usage-meter", "bar").value, 100);
    exercised.add("usage-meter");
  }
}
if (has("listings")) {
  const list = (name) => $('[data-feature="local-user"] [data-part="' + name + '"]');
  const switchTo = (name) => {
    list("name").value = name;
    list("form").dispatch("submit");
    assert.equal(list("current").textContent, name);
  };
  const sell = (title, price) => {
    part("listings", "title").value = title;
    part("listings", "price").value = price;
    part("listings", "description").value = "A fine " + title;
    part("listings", "form").dispatch("submit");
    return part("listings", "message").textContent;
  };
  const listing = (title) => part("listings", "list").querySelectorAll("li")
    .find((li) => li.querySelector("strong").textContent === title);
  assert.equal(list("current").textContent, "You");
  assert.equal(sell("Bike", "abc"), "Enter a price, e.g. 25.00.");
  assert.equal(sell("Bike", "100"), "");
  assert.equal(sell("Lamp", "$20.50"), "");
  assert.deepEqual(stored("listings").map((l) => [l.title, l.price_cents, l.owner_name]),
    [["Bike", 10000, "You"], ["Lamp", 2050, "You"]]);
  assert.ok(listing("Bike").textContent.includes("yours"));
  assert.equal(listing("Bike").querySelector("input"), null, "no bids on your own listing");
  button(listing("Lamp"), "Remove").click();
  assert.deepEqual(stored("listings").map((l) => l.title), ["Bike"]);
  part("listings", "search").value = "bik";
  part("listings", "search").dispatch("input");
  assert.equal(part("listings", "list").querySelectorAll("li").length, 1);
  part("listings", "search").value = "car";
  part("listings", "search").dispatch("input");
  assert.equal(part("listings", "list").querySelectorAll("li").length, 0);
  part("listings", "search").value = "";
  part("listings", "search").dispatch("input");
  exercised.add("listings");

  switchTo("Bob");
  exercised.add("local-user");
  const bid = (amount) => {
    listing("Bike").querySelector("input").value = amount;
    button(listing("Bike"), "Bid").click();
    return part("bids", "message").textContent;
  };
  assert.equal(bid("120"), "");
  assert.ok(listing("Bike").textContent.includes("Highest bid 120.00 by Bob"));
  assert.equal(bid("110"), "Bid more than 120.00.");
  assert.ok(part("bids", "mine").textContent.includes("highest"));
  switchTo("Carol");
  assert.equal(bid("130"), "");
  assert.ok(listing("Bike").textContent.includes("Highest bid 130.00 by Carol"));
  exercised.add("bids");

  button(listing("Bike"), "Buy for 100.00").click();
  assert.equal(stored("listings")[0].status, "sold");
  assert.deepEqual(stored("orders").map((o) => [o.title, o.amount_cents]), [["Bike", 10000]]);
  assert.equal(part("orders", "total").textContent, "100.00");
  assert.equal(listing("Bike").querySelectorAll("button").length, 0, "sold: no more actions");
  button($('[data-feature="local-user"] [data-part="users"]'), "Switch to Bob").click();
  assert.equal(part("orders", "mine").querySelectorAll("li").length, 0);
  assert.ok(part("bids", "mine").textContent.includes("outbid"));
  exercised.add("orders");
}
for (const feature of config.features) {
  if (feature.module !== "notes") continue;
  const scope = '[data-feature="' + feature.key + '"] ';
  $(scope + '[data-part="text"]').value = "first note";
  $(scope + '[data-part="form"]').dispatch("submit");
  assert.deepEqual(stored("notes:" + feature.store).map((n) => n.text), ["first note"]);
  assert.ok($(scope + '[data-part="list"]').textContent.includes("first note"));
  exercised.add(feature.key);
}
process.stdout.write(JSON.stringify(Array.from(exercised).sort()));
"""


def run_node(cwd: Path, *args: str) -> str:
    """Run node in `cwd`; its output, or the test fails with node's error."""
    result = subprocess.run(
        [NODE, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_app(files: dict[str, str], tmp_path: Path, expected: set[str]) -> None:
    """Boot the app in the fake DOM, use every feature; each planned key must be exercised."""
    root = write_app(files, tmp_path / "app")
    tree = page_tree(files["index.html"])
    scripts = [
        n["attrs"]["src"] for n in find(tree) if n["tag"] == "script" and n["attrs"].get("src")
    ]
    spec = tmp_path / "input.json"
    spec.write_text(json.dumps({"dir": str(root), "tree": tree, "scripts": scripts}))
    (tmp_path / "harness.js").write_text(HARNESS)
    assert set(json.loads(run_node(tmp_path, "harness.js", str(spec)))) == expected


@pytest.mark.parametrize(("idea", "template"), APPS)
async def test_every_feature_works_in_the_browser(
    idea: dict[str, Any], template: str | None, tmp_path: Path
) -> None:
    plan, files = await build(idea, template)
    run_app(files, tmp_path, {f.key for f in plan.features})


async def test_the_meal_planner_assigns_recipes_to_weekdays(tmp_path: Path) -> None:
    """The meal plan's pure functions, run by node: entries go to days, Monday to Sunday."""
    plan, files = await build(RECIPE)
    assert "meal-plan" in {f.key for f in plan.features}
    root = write_app(files, tmp_path)
    script = """
const assert = require("assert");
require("./js/core.js");
const meals = require("./js/meal-plan.js");
const entries = [{ id: "a", title: "Soup", tags: ["leek"] }, { id: "b", title: "Stew" }];
let week = meals.assign(meals.emptyWeek(), "Mon", "a");
week = meals.assign(week, "Sun", "b");
week = meals.assign(week, "Sun", "b");
week = meals.assign(week, "Sun", "a");
const view = meals.weekView(week, entries);
assert.deepEqual(view.map((d) => d.day), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]);
assert.deepEqual(view.map((d) => d.entries.map((e) => e.title)),
  [["Soup"], [], [], [], [], [], ["Stew", "Soup"]]);
assert.deepEqual(meals.unassign(week, "Sun", "b").Sun, ["a"]);
assert.deepEqual(meals.weekView(week, [entries[1]])[0].entries, []);
assert.throws(() => meals.assign(week, "Someday", "a"), RangeError);
require("./js/ingredient-tags.js");
const shop = require("./js/shopping-list.js");
assert.deepEqual(shop.shoppingList(week, entries), [{ name: "leek", count: 2 }]);
"""
    (root / "check.js").write_text(script)
    run_node(root, "check.js")


# ------------------------------------------------------- determinism, streaming, errors


async def test_the_same_request_gives_the_same_answer() -> None:
    context = {"idea": EVERYTHING, "template": "saas"}
    first = await OfflineProvider().complete(_request("plan", **context))
    second = await OfflineProvider().complete(_request("plan", **context))
    assert first.text == second.text
    plan = Plan.model_validate_json(first.text)
    code = {"idea": EVERYTHING, "plan": plan.model_dump(mode="json")}
    a = await OfflineProvider().complete(_request("code", **code))
    b = await OfflineProvider().complete(_request("code", **code, feedback=["html: broken"]))
    assert a.text == b.text


async def test_the_answer_streams_in_chunks() -> None:
    plan = await plan_for(RECIPE)
    seen: list[str] = []

    async def on_text(text: str) -> None:
        seen.append(text)

    request = _request("code", idea=RECIPE, plan=plan.model_dump(mode="json"))
    completion = await OfflineProvider().complete(request, on_text=on_text)
    assert "".join(seen) == completion.text
    assert len(seen) > 10
    assert all(200 <= len(piece) <= 400 for piece in seen[:-1])
    assert completion.usage.output_tokens == (len(completion.text) + 3) // 4
    chars = sum(len(m.content) for m in request.messages)
    assert completion.usage.input_tokens == (chars + 3) // 4
    assert (completion.provider, completion.model) == ("offline", OfflineProvider.model)


async def test_the_delay_spaces_the_chunks() -> None:
    request = _request("plan", idea=RECIPE, template=None)
    count = len(chunks((await OfflineProvider().complete(request)).text))
    started = time.perf_counter()
    await OfflineProvider(delay=0.004).complete(request)
    assert time.perf_counter() - started >= (count - 1) * 0.004 * 0.9


def test_chunks_keep_every_character() -> None:
    text = "a" * 1000 + "\n" + "b\u2028c\n" * 90 + "tail"
    pieces = chunks(text)
    assert "".join(pieces) == text
    assert all(len(p) <= 400 for p in pieces)


@pytest.mark.parametrize(
    ("purpose", "context"),
    [
        ("plan", {}),
        ("plan", {"idea": {"description": "no title"}}),
        ("code", {"idea": RECIPE}),
        ("code", {"idea": RECIPE, "plan": {"summary": "no features"}}),
    ],
)
async def test_a_request_without_its_data_is_refused(
    purpose: Purpose, context: dict[str, Any]
) -> None:
    with pytest.raises(ModelError):
        await OfflineProvider().complete(_request(purpose, **context))


async def test_close_is_harmless() -> None:
    provider = OfflineProvider()
    await provider.close()
    assert (await provider.complete(_request("plan", idea=RECIPE))).text
