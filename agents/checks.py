"""The verifier's checks on a generated app: its pages, its scripts, its features, its preview.

Each check looks at the app's files (path → text) or its running preview and returns a
`Check`; a failed check is an expected outcome, never an exception, so the verifier can send
every failure back to codegen at once. `run_checks` runs them all into a `VerificationReport`,
whose `evidence()` is stored with the verifier's run and whose `feedback()` is what codegen is
told to fix.

The checks, by name:

- `html`: every `.html` page parses without tags left open or closed out of order, holds at
  least one element, and the local scripts and stylesheets it loads are among the files;
- `js`: `node --check` accepts every script (as an ES module or a classic script, the way the
  pages load it); skipped, and passed, when node is not installed;
- `features`: every feature key of the plan marks an element (`data-feature="<key>"`);
- `served`: the preview answers 200 with a body on each path asked for.
"""

from __future__ import annotations

import asyncio
import math
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from schemas.plan import Plan, PlannedFile, safe_path

__all__ = [
    "NODE",
    "Check",
    "Files",
    "VerificationReport",
    "check_features",
    "check_html",
    "check_js",
    "check_served",
    "run_checks",
]

NODE = shutil.which("node")
"""The node found on PATH when this module loaded (None: JavaScript syntax is not checked)."""

Files = Mapping[str, str] | Iterable[PlannedFile]
"""An app's files: path → content, or the PlannedFiles codegen produced."""

_MAX_LISTED = 10
_MAX_ERROR_CHARS = 2000

# Elements without content (no end tag), and those whose end tag HTML lets an author omit.
_VOID = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta",
        "param", "source", "track", "wbr",
    }
)  # fmt: skip
_OPTIONAL_END = frozenset(
    {
        "html", "head", "body", "p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody",
        "tfoot", "option", "optgroup", "colgroup", "caption", "rb", "rt", "rtc", "rp",
    }
)  # fmt: skip
# An optional-end element that a new sibling closes implicitly: opening the key closes these.
_CLOSED_BY_SIBLING = {
    "li": {"li"},
    "dt": {"dt", "dd"},
    "dd": {"dt", "dd"},
    "tr": {"tr", "td", "th"},
    "td": {"td", "th"},
    "th": {"td", "th"},
    "option": {"option"},
    "optgroup": {"optgroup", "option"},
    "p": {"p"},
}
_FOREIGN = frozenset({"svg", "math"})
_LOADED_LINKS = frozenset({"stylesheet", "modulepreload"})
# Where an element can be marked: pages and the code that builds them (not docs or data).
_MARKUP_AND_CODE = (".html", ".htm", ".svg", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx")

_FEATURE_ATTR = re.compile(
    r"""data-feature\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))"""
    r"""|setAttribute\(\s*["']data-feature["']\s*,\s*["']([^"']*)["']"""
    r"""|\.dataset\.feature\s*=\s*["'`]([^"'`$]*)["'`]"""
)
_IMPORT = re.compile(
    r"""(?:\bfrom|\bimport)\s*\(?\s*["']((?:\.{1,2}/|/)[^"'\n]*)["']""",
)
_LOOKS_LIKE_MODULE = re.compile(r"^\s*(?:import\s*[\w{*\"']|export\s)", re.MULTILINE)
_NODE_NOISE = ("    at ", "Node.js v", "(node:", "(Use `node")


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check."""

    name: str
    """Which check (`html`, `js`, `features`, `served`)."""
    passed: bool
    """Whether the app passed it."""
    detail: str
    """One line: what was checked, or what is wrong and where (what codegen is told)."""
    data: dict[str, Any] = field(default_factory=dict)
    """What was found, as JSON-safe data (stored as evidence)."""

    def evidence(self) -> dict[str, Any]:
        """This check as JSON-safe data."""
        return {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "data": _json_safe(self.data),
        }


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """Every check run on an app, and whether it passed them all."""

    passed: bool
    checks: tuple[Check, ...]
    summary: str
    """One line for the terminal and the run row."""

    @classmethod
    def of(cls, checks: Iterable[Check]) -> VerificationReport:
        """The report on `checks`: passed when every one passed."""
        checks = tuple(checks)
        failed = [c.name for c in checks if not c.passed]
        if failed:
            summary = f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}"
        else:
            summary = f"all {len(checks)} checks passed"
        return cls(passed=not failed, checks=checks, summary=summary)

    def evidence(self) -> dict[str, Any]:
        """The report as JSON-safe data (`agent_runs.verification_evidence`)."""
        return {
            "passed": self.passed,
            "summary": self.summary,
            "checks": [c.evidence() for c in self.checks],
        }

    def feedback(self) -> list[str]:
        """One line per failed check: what codegen is asked to fix."""
        return [f"{c.name}: {_one_line(c.detail)}" for c in self.checks if not c.passed]


def _json_safe(value: Any) -> Any:
    """`value` with only what JSON (and Postgres jsonb) can hold."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        # jsonb refuses NaN and infinities.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    return str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _listed(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    return f"{shown}; and {more} more" if more > 0 else shown


def _as_mapping(files: Files) -> dict[str, str]:
    """`files` as path → content, paths normalised the way the stream parser does."""
    pairs = files.items() if isinstance(files, Mapping) else ((f.path, f.content) for f in files)
    return {posixpath.normpath(path): content for path, content in pairs}


def _local_target(page: str, ref: str) -> str | None:
    """The project file a page's reference points to; None for a remote or empty one.

    A reference that climbs out of the project comes back as the unresolvable `..`.
    """
    parts = urlsplit(ref.strip())
    if parts.scheme or parts.netloc or not parts.path:
        return None
    path = unquote(parts.path)
    joined = (
        path.lstrip("/") if path.startswith("/") else posixpath.join(posixpath.dirname(page), path)
    )
    normal = posixpath.normpath(joined) if joined else "."
    return ".." if normal.startswith("..") or normal == "." else normal


# ------------------------------------------------------------------------------------ html


class _PageAudit(HTMLParser):
    """Walks one page: nesting problems, element count, the scripts and styles it loads."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, int]] = []
        self.problems: list[str] = []
        self.elements = 0
        self.scripts: list[tuple[str, bool]] = []
        """`src` of each script and whether it loads as a module."""
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=True)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return  # `</br>`, `<img></img>`: wrong but harmless, browsers shrug
        line = self.getpos()[0]
        at = next((i for i in range(len(self.open) - 1, -1, -1) if self.open[i][0] == tag), None)
        if at is None:
            self.problems.append(f"line {line}: </{tag}> closes nothing that is open")
            return
        for inner, opened in self.open[at + 1 :]:
            if inner not in _OPTIONAL_END:
                self.problems.append(
                    f"line {opened}: <{inner}> is still open when </{tag}> (line {line}) "
                    f"closes <{tag}>"
                )
        del self.open[at:]

    def finish(self) -> None:
        """Read the end of the page; report what was never closed."""
        self.close()
        for tag, line in self.open:
            if tag not in _OPTIONAL_END:
                self.problems.append(f"line {line}: <{tag}> is never closed")
        if not self.elements:
            self.problems.append("no HTML element at all")

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, self_closing: bool) -> None:
        self.elements += 1
        values = {name: value or "" for name, value in attrs}
        if tag == "script" and values.get("src"):
            self.scripts.append((values["src"], values.get("type", "").strip() == "module"))
        elif (
            tag == "link"
            and values.get("href")
            and _LOADED_LINKS.intersection(values.get("rel", "").lower().split())
        ):
            self.styles.append(values["href"])
        if tag in _VOID:
            return
        if self_closing:
            # `<x/>` closes itself only in SVG and MathML; in HTML the slash is ignored.
            if tag not in _FOREIGN and not any(t in _FOREIGN for t, _ in self.open):
                self.problems.append(
                    f"line {self.getpos()[0]}: <{tag}/> does not close itself in HTML: "
                    f"write <{tag}></{tag}>"
                )
            return
        siblings = _CLOSED_BY_SIBLING.get(tag)
        if siblings and self.open and self.open[-1][0] in siblings:
            self.open.pop()
        self.open.append((tag, self.getpos()[0]))


def _audit(text: str) -> _PageAudit:
    audit = _PageAudit()
    audit.feed(text)
    audit.finish()
    return audit


def check_html(files: Files) -> Check:
    """Every `.html` page is well nested and loads only scripts and stylesheets that exist.

    Tags whose end HTML lets authors omit (`<p>`, `<li>`, `<td>`, …) may stay open; others
    must close, in order. Remote references (`https:`, `//host`, `data:`) are not checked.
    """
    by_path = _as_mapping(files)
    pages = sorted(p for p in by_path if p.lower().endswith((".html", ".htm")))
    if not pages:
        return Check("html", False, "no .html page: the app has nothing to open", {"pages": []})
    problems: dict[str, list[str]] = {}
    missing: list[dict[str, str]] = []
    for page in pages:
        audit = _audit(by_path[page])
        if audit.problems:
            problems[page] = audit.problems
        refs = [("script", src) for src, _ in audit.scripts] + [("link", h) for h in audit.styles]
        for tag, ref in refs:
            target = _local_target(page, ref)
            if target is not None and target not in by_path:
                missing.append({"page": page, "tag": tag, "ref": ref})
    lines = [f"{page} {p}" for page, found in problems.items() for p in found]
    lines += [
        f"{m['page']}: <{m['tag']}> loads {m['ref']!r}, which is not among the files"
        for m in missing
    ]
    data: dict[str, Any] = {"pages": pages, "problems": problems, "missing": missing}
    if lines:
        return Check("html", False, _listed(lines), data)
    return Check("html", True, f"{len(pages)} page(s) well formed, local references found", data)


# -------------------------------------------------------------------------------------- js


def _script_modes(by_path: Mapping[str, str]) -> dict[str, bool]:
    """Each script's path → whether it is an ES module (else a classic script).

    A `.js` file loaded by a plain `<script src>` is classic (then `import` in it is the bug
    the check should catch); one loaded with `type="module"` or imported is a module; an
    unreferenced one is a module when it reads like one.
    """
    classic: set[str] = set()
    modules: set[str] = set()
    for page, text in by_path.items():
        if page.lower().endswith((".html", ".htm")):
            audit = _audit(text)
            for src, is_module in audit.scripts:
                target = _local_target(page, src)
                if target is not None:
                    (modules if is_module else classic).add(target)
    scripts = {p: t for p, t in by_path.items() if p.lower().endswith((".js", ".mjs", ".cjs"))}
    for path, text in scripts.items():
        for spec in _IMPORT.findall(text):
            target = _local_target(path, spec)
            if target is not None:
                modules.add(target)
    modes: dict[str, bool] = {}
    for path, text in scripts.items():
        lower = path.lower()
        if lower.endswith((".mjs", ".cjs")):
            modes[path] = lower.endswith(".mjs")
        elif path in classic:
            modes[path] = False
        else:
            modes[path] = path in modules or bool(_LOOKS_LIKE_MODULE.search(text))
    return modes


def _write_scripts(root: Path, scripts: Mapping[str, tuple[str, bool]]) -> dict[str, Path]:
    """Write each script under `root` with the extension node reads its mode from."""
    written: dict[str, Path] = {}
    for path, (text, is_module) in scripts.items():
        target = root / (path + (".mjs" if is_module else ".cjs"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", errors="surrogatepass")
        written[path] = target
    return written


def _node_error(stderr: str, disk_path: Path, path: str) -> tuple[str, str]:
    """(one line, the whole message) from node's complaint about `path`."""
    text = "\n".join(
        line.replace(str(disk_path), path)
        for line in stderr.splitlines()
        if not line.startswith(_NODE_NOISE)
    ).strip()
    where = re.search(rf"^{re.escape(path)}:(\d+)", text, re.MULTILINE)
    error = re.search(r"^\w*(?:Error|Exception)\b.*$", text, re.MULTILINE)
    short = error.group(0) if error else (text.splitlines() or ["node --check failed"])[-1]
    head = f"{path} line {where.group(1)}" if where else path
    return f"{head}: {short}", text[:_MAX_ERROR_CHARS]


async def _node_check(
    node: str, path: str, disk_path: Path, *, is_module: bool, file_timeout: float
) -> dict[str, Any]:
    """`node --check` on one script, as evidence: ok, mode, and the error when there is one."""
    result: dict[str, Any] = {"path": path, "mode": "module" if is_module else "script"}
    # NODE_OPTIONS could preload code into node; a syntax check runs none.
    env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
    try:
        proc = await asyncio.create_subprocess_exec(
            node, "--no-warnings", "--check", str(disk_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=disk_path.parent, env=env,
        )  # fmt: skip
    except OSError as err:
        return result | {"ok": False, "error": f"{path}: could not run {node}: {err}"}
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), file_timeout)
    except TimeoutError:
        took = f"node --check took over {file_timeout:g}s"
        return result | {"ok": False, "error": f"{path}: {took}"}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode == 0:
        return result | {"ok": True}
    short, full = _node_error(stderr.decode("utf-8", "replace"), disk_path, path)
    if not is_module and re.search(r"\b(import|export)\b", short):
        short += ' (the page loads it as a classic script: add type="module" to its <script>)'
    return result | {"ok": False, "error": short, "output": full}


async def check_js(
    files: Files, *, node: str | None = NODE, file_timeout: float = 20.0, concurrency: int = 4
) -> Check:
    """`node --check` accepts every `.js`/`.mjs` file (modules as modules, scripts as scripts).

    The scripts are written to a temporary directory, removed afterwards whatever happens;
    each node gets `file_timeout` seconds. Without node the check passes, saying in `detail` and
    `data` (`skipped`) that no syntax was checked.
    """
    by_path = _as_mapping(files)
    modes = _script_modes(by_path)
    scripts = dict(modes)
    data: dict[str, Any] = {"node": node, "skipped": False, "files": []}
    if not scripts:
        return Check("js", True, "no JavaScript files", data)
    if node is None:
        data |= {"skipped": True, "files": sorted(scripts)}
        return Check("js", True, "node not installed: syntax not checked", data)
    unsafe: list[str] = []
    for path in list(scripts):
        try:
            safe_path(path)
        except ValueError:
            unsafe.append(path)
            del scripts[path]
    limit = asyncio.Semaphore(concurrency)

    async def one(path: str, disk_path: Path) -> dict[str, Any]:
        async with limit:
            return await _node_check(
                node, path, disk_path, is_module=scripts[path], file_timeout=file_timeout
            )

    with tempfile.TemporaryDirectory(prefix="myyc-js-") as tmp:
        try:
            written = await asyncio.to_thread(
                _write_scripts, Path(tmp), {p: (by_path[p], m) for p, m in scripts.items()}
            )
        except OSError as err:
            # Paths the disk refuses (a file where a folder must be, too long): the app's fault.
            data["error"] = str(err)
            return Check("js", False, f"could not write the scripts to check them: {err}", data)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(p, d)) for p, d in sorted(written.items())]
    results = [t.result() for t in tasks]
    results += [{"path": p, "ok": False, "error": f"{p}: unsafe path"} for p in unsafe]
    data["files"] = results
    errors = [r["error"] for r in results if not r["ok"]]
    if errors:
        return Check("js", False, _listed(errors), data)
    return Check("js", True, f"{len(results)} script(s) parse under node --check", data)


# -------------------------------------------------------------------------------- features


def check_features(plan: Plan, files: Files) -> Check:
    """Every feature key of the plan marks an element of the app.

    A mark is the attribute `data-feature="<key>"` (quoted either way, or bare), in a page or
    in the script that builds the element (`setAttribute("data-feature", …)`,
    `el.dataset.feature = …`); one element may list several keys, space-separated. Docs and
    data files (`README.md`, `.json`) do not count: they mark no element.
    """
    where: dict[str, list[str]] = {}
    for path, text in sorted(_as_mapping(files).items()):
        if not path.lower().endswith(_MARKUP_AND_CODE):
            continue
        for match in _FEATURE_ATTR.finditer(text):
            value = next(g for g in match.groups() if g is not None)
            for key in value.split():
                where.setdefault(key, [])
                if path not in where[key]:
                    where[key].append(path)
    expected = [f.key for f in plan.features]
    missing = [key for key in expected if key not in where]
    data = {
        "expected": expected,
        "missing": missing,
        "found": {key: where[key] for key in expected if key in where},
    }
    if missing:
        marks = ", ".join(f'data-feature="{key}"' for key in missing)
        return Check("features", False, f"no element is marked {marks}", data)
    return Check("features", True, f"all {len(expected)} feature(s) marked", data)


# ---------------------------------------------------------------------------------- served


def _public_url(url: str) -> str:
    """`url` without credentials, query or fragment: what evidence may keep of it."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))


def _under(base: httpx.URL, path: str) -> httpx.URL:
    """`path` (with its own query, if any) under `base`'s path; `base`'s query otherwise."""
    target = httpx.URL(path)
    joined = base.path.rstrip("/") + "/" + target.path.lstrip("/")
    return base.copy_with(path=joined, query=target.query or base.query, fragment=None)


async def check_served(
    base_url: str,
    *,
    paths: Sequence[str] = ("/",),
    http: httpx.AsyncClient | None = None,
    request_timeout: float = 10.0,
) -> Check:
    """GET each of `paths` under `base_url` answers 200 with a non-blank body.

    Each request gets `request_timeout` seconds; redirects are followed. A refused
    connection, a timeout or an invalid URL fails the check (it is what the preview did);
    `http` lets tests and callers bring their own client.
    """
    client = http or httpx.AsyncClient(timeout=request_timeout)
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        for path in paths:
            result: dict[str, Any] = {"path": path}
            try:
                url = _under(httpx.URL(base_url), path)
                response = await client.get(url, timeout=request_timeout, follow_redirects=True)
            except (httpx.HTTPError, httpx.InvalidURL) as err:
                reason = f"{type(err).__name__}: {err}".rstrip(": ")
                results.append(result | {"ok": False, "error": reason})
                problems.append(f"GET {path} failed ({reason})")
                continue
            ok = response.status_code == 200 and bool(response.content.strip())
            results.append(
                result
                | {
                    "ok": ok,
                    "status": response.status_code,
                    "bytes": len(response.content),
                    "content_type": response.headers.get("content-type"),
                }
            )
            if response.status_code != 200:
                problems.append(f"GET {path} answered {response.status_code}")
            elif not ok:
                problems.append(f"GET {path} answered 200 with an empty body")
    finally:
        if http is None:
            await client.aclose()
    data = {"base_url": _public_url(base_url), "results": results}
    if problems:
        return Check("served", False, _listed(problems), data)
    return Check("served", True, f"{len(results)} path(s) served with 200", data)


# ------------------------------------------------------------------------------------- all


async def run_checks(
    plan: Plan,
    files: Files,
    *,
    base_url: str | None,
    node: str | None = NODE,
    require_served: bool = True,
    served_paths: Sequence[str] = ("/",),
    http: httpx.AsyncClient | None = None,
) -> VerificationReport:
    """Every check on the app, in order html, js, features, served.

    `served` runs when there is a preview (`base_url`); without one it fails with "no preview
    to serve the app" if `require_served`, else it is left out of the report.
    """
    by_path = _as_mapping(files)
    async with asyncio.TaskGroup() as group:
        js = group.create_task(check_js(by_path, node=node))
        served = (
            group.create_task(check_served(base_url, paths=served_paths, http=http))
            if base_url is not None
            else None
        )
    checks = [check_html(by_path), js.result(), check_features(plan, by_path)]
    if served is not None:
        checks.append(served.result())
    elif require_served:
        checks.append(Check("served", False, "no preview to serve the app", {"base_url": None}))
    return VerificationReport.of(checks)
