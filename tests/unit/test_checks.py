"""The verifier's checks, on small apps: what passes, and what each broken app is told."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.checks import (
    Check,
    VerificationReport,
    check_features,
    check_html,
    check_js,
    check_served,
    run_checks,
)
from local.server import serve
from schemas.plan import Plan, PlannedFile

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PLAN = Plan(
    summary="A todo list.",
    features=[
        {"key": "add-todo", "feature": "Add a todo"},
        {"key": "list-todos", "feature": "List todos"},
        {"key": "done", "feature": "Mark a todo done"},
    ],
    files=[{"path": "index.html"}, {"path": "app.js"}],
)

INDEX = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Todos</title>
  <link rel="stylesheet" href="styles.css">
  <link rel="icon" href="favicon.ico">
  <script src="https://cdn.example.com/lib.js"></script>
  <script type="module" src="./js/app.js"></script>
</head>
<body>
  <form data-feature="add-todo"><input name="title"><button>Add</button></form>
  <ul data-feature='list-todos'><li>one<li>two</ul>
  <table><tr><td>a<td>b</table>
  <p>Plain text <br> with a line break<p>and an implied paragraph end
  <svg viewBox="0 0 1 1"><path d="M0 0"/><circle r="1"/></svg>
  <script>const markup = "<div>";</script>
</body>
</html>
"""

GOOD = {
    "index.html": INDEX,
    "styles.css": "body { margin: 0; }\n",
    "js/app.js": 'import { render } from "./render.js";\nawait Promise.resolve();\nrender();\n',
    "js/render.js": (
        "export function render() {\n"
        '  const b = document.createElement("button");\n'
        '  b.setAttribute("data-feature", "done");\n'
        "}\n"
    ),
    "README.md": "# Todos\n",
}


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary: these tests need it (a missing node fails them, never skips)."""
    found = shutil.which("node")
    assert found, "node must be installed to test the JavaScript check"
    return found


def with_files(**changes: str | None) -> dict[str, str]:
    """GOOD with some files replaced (`None` removes one); keys use `__` for `/`, `_` for `.`."""
    files = dict(GOOD)
    for key, content in changes.items():
        path = key.replace("__", "/").replace("_", ".")
        if content is None:
            files.pop(path, None)
        else:
            files[path] = content
    return files


# ------------------------------------------------------------------------------------ html


def test_good_pages_pass() -> None:
    check = check_html(GOOD)
    assert check == Check("html", True, check.detail, check.data)
    assert check.data["pages"] == ["index.html"]


@pytest.mark.parametrize(
    ("page", "detail"),
    [
        ("<main><div>open</main>", "line 1: <div> is still open when </main> (line 1) closes"),
        ("<div>\n<section>\n</div>", "line 2: <section> is still open when </div> (line 3)"),
        ("<div><span></div></span>", "</span> closes nothing that is open"),
        ("<body>\n<div>never closed\n</body>", "line 2: <div> is still open"),
        ("<main>\n<article>", "line 2: <article> is never closed"),
        ("<div/><p>x</p>", "<div/> does not close itself in HTML"),
        ("</div><p>x</p>", "</div> closes nothing"),
        ("just some text, no markup", "no HTML element at all"),
    ],
)
def test_broken_html_fails_with_where_and_what(page: str, detail: str) -> None:
    check = check_html(with_files(index_html=page))
    assert not check.passed
    assert detail in check.detail
    assert check.detail.startswith("index.html line") or check.detail.startswith("index.html ")
    assert check.data["problems"]["index.html"]


@pytest.mark.parametrize(
    ("ref", "tag"),
    [
        ('<script src="missing.js"></script>', "script"),
        ('<script type="module" src="/js/nope.js"></script>', "script"),
        ('<link rel="stylesheet" href="css/site.css">', "link"),
        ('<link rel="modulepreload" href="../outside.js">', "link"),
    ],
)
def test_a_missing_local_script_or_stylesheet_fails(ref: str, tag: str) -> None:
    check = check_html(with_files(index_html=f"<html><head>{ref}</head><body></body></html>"))
    assert not check.passed
    [missing] = check.data["missing"]
    assert missing["page"] == "index.html"
    assert missing["tag"] == tag
    assert "which is not among the files" in check.detail


def test_references_resolve_from_the_page_folder() -> None:
    files = {
        "pages/about.html": '<link rel="stylesheet" href="../styles.css">'
        '<script src="a.js"></script>',
        "styles.css": "",
        "pages/a.js": "",
    }
    assert check_html(files).passed


def test_no_page_fails() -> None:
    check = check_html({"app.js": "1;\n"})
    assert not check.passed
    assert "no .html page" in check.detail


def test_planned_files_are_accepted_too() -> None:
    assert check_html([PlannedFile(path=p, content=c) for p, c in GOOD.items()]).passed


# -------------------------------------------------------------------------------------- js


async def test_good_scripts_pass_as_modules(node: str) -> None:
    """Top-level await and imports are fine in modules (the page loads app.js as one)."""
    check = await check_js(GOOD, node=node)
    assert check.passed, check.detail
    assert check.data["files"] == [
        {"path": "js/app.js", "mode": "module", "ok": True},
        {"path": "js/render.js", "mode": "module", "ok": True},
    ]


async def test_a_syntax_error_fails_with_file_and_line(node: str) -> None:
    check = await check_js(
        with_files(js__render_js="export function render() {\n  let = ;\n"), node=node
    )
    assert not check.passed
    assert check.detail.startswith("js/render.js line 2: SyntaxError:")
    [bad] = [f for f in check.data["files"] if not f["ok"]]
    assert bad["path"] == "js/render.js"
    assert "/tmp" not in bad["output"]  # the temporary directory is not what the model sees


async def test_import_in_a_classic_script_fails_with_a_hint(node: str) -> None:
    files = {
        "index.html": '<script src="app.js"></script>',
        "app.js": 'import { x } from "./x.js";\nx();\n',
        "x.js": "export const x = () => 1;\n",
    }
    check = await check_js(files, node=node)
    assert not check.passed
    assert check.detail.startswith("app.js line 1: SyntaxError: Cannot use import statement")
    assert 'add type="module"' in check.detail
    modes = {f["path"]: f["mode"] for f in check.data["files"]}
    assert modes == {"app.js": "script", "x.js": "module"}


async def test_mjs_is_a_module_and_unreferenced_scripts_are_guessed(node: str) -> None:
    files = {
        "a.mjs": "await 1;\n",
        "lib/b.js": "export default 1;\n",
        "c.js": "var x = 010;\n",  # legacy octal: fine in a classic script
    }
    check = await check_js(files, node=node)
    assert check.passed, check.detail
    modes = {f["path"]: f["mode"] for f in check.data["files"]}
    assert modes == {"a.mjs": "module", "lib/b.js": "module", "c.js": "script"}


async def test_without_node_the_check_passes_and_says_so() -> None:
    check = await check_js(GOOD, node=None)
    assert check.passed
    assert check.detail == "node not installed: syntax not checked"
    assert check.data == {"node": None, "skipped": True, "files": ["js/app.js", "js/render.js"]}


async def test_no_scripts_pass(node: str) -> None:
    check = await check_js({"index.html": "<p>x</p>"}, node=node)
    assert (check.passed, check.detail) == (True, "no JavaScript files")


async def test_a_hanging_node_times_out_and_the_temp_dir_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hanging = tmp_path / "node"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(hanging.stat().st_mode | stat.S_IEXEC)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    check = await check_js(GOOD, node=str(hanging), file_timeout=0.2)

    assert not check.passed
    assert "js/app.js: node --check took over 0.2s" in check.detail
    assert list(temp.iterdir()) == []


async def test_a_node_that_cannot_run_fails_the_check(tmp_path: Path) -> None:
    check = await check_js(GOOD, node=str(tmp_path / "no-node"))
    assert not check.passed
    assert "could not run" in check.detail


# -------------------------------------------------------------------------------- features


def test_every_feature_marked_passes() -> None:
    check = check_features(PLAN, GOOD)
    assert check.passed, check.detail
    assert check.data["found"] == {
        "add-todo": ["index.html"],
        "list-todos": ["index.html"],
        "done": ["js/render.js"],
    }


def test_a_missing_feature_key_fails_naming_it() -> None:
    check = check_features(PLAN, with_files(js__render_js="export function render() {}\n"))
    assert not check.passed
    assert check.detail == 'no element is marked data-feature="done"'
    assert check.data["missing"] == ["done"]


@pytest.mark.parametrize(
    "markup",
    [
        '<div data-feature="add-todo list-todos done"></div>',
        "<div data-feature=add-todo></div><b data-feature = 'list-todos'></b><i data-feature=done>",
        'el.dataset.feature = "add-todo"; a.setAttribute(\'data-feature\', "list-todos");'
        ' x.innerHTML = `<p data-feature="done">`;',
    ],
)
def test_feature_marks_in_their_usual_spellings(markup: str) -> None:
    assert check_features(PLAN, {"index.html": markup}).passed


def test_a_mark_in_the_readme_does_not_count() -> None:
    files = {"index.html": "<p>hi</p>", "README.md": 'Mark it with data-feature="done".'}
    assert check_features(PLAN, files).data["missing"] == ["add-todo", "list-todos", "done"]


def test_a_key_that_only_prefixes_a_mark_does_not_count() -> None:
    check = check_features(PLAN, {"index.html": '<p data-feature="add-todos list done">'})
    assert check.data["missing"] == ["add-todo", "list-todos"]


# ---------------------------------------------------------------------------------- served


def _app(routes: dict[str, tuple[int, bytes]]) -> Any:
    """A tiny ASGI app answering `routes` (path → status, body); 404 elsewhere."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/old":
            await send({"type": "http.response.start", "status": 302,
                        "headers": [(b"location", b"/")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
            return
        status, body = routes.get(scope["path"], (404, b"not found"))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/html")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """A loopback server: / is the page, /boom fails, /blank is empty."""
    routes = {"/": (200, INDEX.encode()), "/boom": (500, b"oops"), "/blank": (200, b" \n")}
    async with serve(_app(routes)) as url:
        yield url


async def test_a_served_page_passes(site: str) -> None:
    check = await check_served(site, paths=("/", "/old"))
    assert check.passed, check.detail
    assert [r["status"] for r in check.data["results"]] == [200, 200]


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/missing", "GET /missing answered 404"),
        ("/boom", "GET /boom answered 500"),
        ("/blank", "GET /blank answered 200 with an empty body"),
    ],
)
async def test_a_bad_answer_fails(site: str, path: str, detail: str) -> None:
    check = await check_served(site, paths=("/", path))
    assert not check.passed
    assert check.detail == detail


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_connection_is_a_failed_check_not_an_exception() -> None:
    check = await check_served(f"http://127.0.0.1:{_closed_port()}", request_timeout=2)
    assert not check.passed
    assert check.detail.startswith("GET / failed (ConnectError")
    assert check.data["results"][0]["ok"] is False


async def test_an_injected_client_is_used_and_left_open() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, text="<p>hi</p>")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        check = await check_served(
            "https://u:secret@preview.test/p/?token=abc", paths=["/"], http=http
        )
        assert not http.is_closed
    assert check.passed
    assert seen == ["https://u:secret@preview.test/p/?token=abc"]  # the preview's token kept
    assert check.data["base_url"] == "https://preview.test/p/"  # no credentials, no token


# ------------------------------------------------------------------------------------- all


async def test_a_good_app_passes_every_check(node: str) -> None:
    async with serve(_app({"/": (200, INDEX.encode())})) as url:
        report = await run_checks(PLAN, GOOD, base_url=url, node=node)
    assert report.passed, report.feedback()
    assert [c.name for c in report.checks] == ["html", "js", "features", "served"]
    assert report.summary == "all 4 checks passed"
    assert report.feedback() == []


async def test_a_broken_app_gets_one_feedback_line_per_failed_check(node: str) -> None:
    files = with_files(
        index_html="<main><div></main>",
        js__render_js="export function render( {\n",
    )
    report = await run_checks(PLAN, files, base_url=f"http://127.0.0.1:{_closed_port()}", node=node)
    assert not report.passed
    assert report.summary == "4 of 4 checks failed: html, js, features, served"
    feedback = report.feedback()
    assert [line.split(":")[0] for line in feedback] == ["html", "js", "features", "served"]
    assert all("\n" not in line for line in feedback)


async def test_no_preview_fails_when_serving_is_required(node: str) -> None:
    report = await run_checks(PLAN, GOOD, base_url=None, node=node)
    assert not report.passed
    assert report.checks[-1] == Check(
        "served", False, "no preview to serve the app", {"base_url": None}
    )


async def test_no_preview_is_left_out_when_not_required(node: str) -> None:
    report = await run_checks(PLAN, GOOD, base_url=None, node=node, require_served=False)
    assert report.passed
    assert [c.name for c in report.checks] == ["html", "js", "features"]


async def test_evidence_is_json(node: str) -> None:
    report = await run_checks(PLAN, with_files(index_html="<div>"), base_url=None, node=node)
    evidence = report.evidence()
    assert json.loads(json.dumps(evidence, allow_nan=False)) == evidence
    assert evidence["passed"] is False
    assert [c["name"] for c in evidence["checks"]] == ["html", "js", "features", "served"]


def test_evidence_makes_odd_data_json_safe() -> None:
    odd_data: dict[Any, Any] = {"t": (1, 2), "s": {3}, 4: float("nan"), "p": Path("a")}
    odd = Check("x", True, "ok", odd_data)
    report = VerificationReport.of([odd])
    data = report.evidence()["checks"][0]["data"]
    assert data == {"t": [1, 2], "s": [3], "4": "nan", "p": "a"}
    json.dumps(data, allow_nan=False)


async def test_a_script_name_the_disk_refuses_fails_the_check(node: str) -> None:
    """A file name over 255 bytes is a valid path here but no file system takes it."""
    check = await check_js({"a" * 260 + ".js": "1;\n"}, node=node)
    assert not check.passed
    assert check.detail.startswith("could not write the scripts to check them")
