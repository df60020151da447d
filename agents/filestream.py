"""The codegen file stream: how a model writes an app's files, parsed as the text streams in.

An answer holds files as blocks::

    @@file index.html
    <!doctype html>
    ...
    @@end

A block's content is every line between its `@@file <path>` line and its `@@end` line, each
ending with a newline (`\\r\\n` becomes `\\n`). Text outside blocks is ignored: models chat
before and after, and often wrap the whole answer in a markdown fence. Marker lines may be
indented; a content line that is itself `@@end` (or starts with `@@file `) cannot be written.

`FileStreamParser` hands back each file as soon as its `@@end` line is complete, whatever the
chunk boundaries, so the terminal shows files landing while the model still writes. Every
block ends as a `ParsedFile` (valid) or a `Rejected` (path and reason); `repair_message` turns
the rejections into the text that goes back to the model.

The rules a file must meet (`validate_file`, plus the per-answer rules of the parser):

- a relative path inside the project (`schemas.plan.safe_path`), at most 300 characters, with
  no hidden or tooling part: no segment starting with a dot (`.git/`, `.env`, `./.x`) and no
  `node_modules/`;
- one of `ALLOWED_EXTENSIONS` (case-insensitive). They are the text files of a small web app:
  pages, styles, scripts (and TypeScript/JSX sources for a build step), data, docs, SVG and
  SQL. Binary assets and extensionless files (`Makefile`, `LICENSE`) are refused because the
  stream carries text, and executables or configs of other tools do not belong in a preview;
- UTF-8 text without NUL, at most `MAX_FILE_BYTES` bytes encoded; a `.json` file must parse
  (a truncated answer often leaves a JSON file cut short), except `tsconfig*.json` and
  `jsconfig*.json`, which TypeScript reads as JSON with comments;
- content wrapped whole in a markdown fence (a "```lang" line first, a "```" line last) is
  unwrapped first. A `.md` file is unwrapped only when the fence says `markdown` or `md`,
  since a README may legitimately be a single code block;
- per answer: at most `MAX_FILES` blocks (counted in order, rejected blocks included), at most
  `MAX_TOTAL_BYTES` of accepted content, and each path once. A repeated path (compared
  case-insensitively, as case-insensitive file systems would) is rejected and the first one
  stands: the first is already streamed to the consumer, and "last one wins" would make it
  take back a file it was told was good.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from schemas.plan import MAX_FILE_BYTES, MAX_FILES, PlannedFile, safe_path

__all__ = [
    "ALLOWED_EXTENSIONS",
    "END_MARKER",
    "FILE_MARKER",
    "MAX_PATH_CHARS",
    "MAX_TOTAL_BYTES",
    "FileRejected",
    "FileStreamParser",
    "ParsedFile",
    "Rejected",
    "StreamItem",
    "format_files",
    "parse_files",
    "repair_message",
    "validate_file",
]

ALLOWED_EXTENSIONS = frozenset(
    {
        "html", "css", "js", "mjs", "json", "md", "svg", "txt",
        "ts", "tsx", "jsx", "sql", "toml", "yaml", "yml",
    }
)  # fmt: skip
MAX_TOTAL_BYTES = 2 * 1024 * 1024
"""The most accepted content one answer may carry (UTF-8 bytes, all files together)."""
MAX_PATH_CHARS = 300
"""The longest path accepted (`PlannedFile.path`)."""

FILE_MARKER = "@@file"
END_MARKER = "@@end"
_TOOLING_SEGMENTS = frozenset({"node_modules"})
_FENCE_OPEN = re.compile(r"^```[ \t]*([\w+#.-]*)[ \t]*$")
_JSON_WITH_COMMENTS = re.compile(r"^[tj]sconfig[\w.-]*\.json$")
# A line longer than this (without its newline) cannot belong to an acceptable file, so the
# parser stops buffering it instead of holding an unbounded line in memory.
_MAX_LINE_CHARS = MAX_FILE_BYTES + 1


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """A file of the answer that passed validation."""

    file: PlannedFile
    """The file, path normalised and content unwrapped from a markdown fence."""
    index: int
    """Its block's position in the answer (0-based, rejected blocks counted)."""

    @property
    def path(self) -> str:
        """The file's normalised path."""
        return self.file.path

    @property
    def content(self) -> str:
        """The file's text."""
        return self.file.content


@dataclass(frozen=True, slots=True)
class Rejected:
    """A block of the answer that was refused, and why (what the repair message says)."""

    path: str
    """The path as the model wrote it; empty when the rejection is about the whole answer."""
    reason: str
    """Why, in words the model can act on."""
    index: int | None = None
    """The block's position in the answer, when the rejection is about one block."""


StreamItem = ParsedFile | Rejected


class FileRejected(ValueError):
    """A file that breaks one of the rules of the stream format."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def rejected(self, index: int | None = None) -> Rejected:
        """This refusal as a stream item."""
        return Rejected(self.path, self.reason, index)


def _check_path(path: str) -> str:
    """The normalised path, or FileRejected saying which path rule it breaks."""
    if not path:
        raise FileRejected(path, f"no path after {FILE_MARKER}")
    if len(path) > MAX_PATH_CHARS:
        raise FileRejected(path, f"path longer than {MAX_PATH_CHARS} characters")
    try:
        normal = safe_path(path)
    except ValueError as err:
        raise FileRejected(
            path, "unsafe path: it must be a relative path inside the project, with / separators"
        ) from err
    segments = normal.split("/")
    if any(s.startswith(".") for s in segments) or _TOOLING_SEGMENTS.intersection(segments):
        raise FileRejected(
            path, "hidden or tooling path (a part starting with a dot, or node_modules)"
        )
    _, dot, extension = segments[-1].rpartition(".")
    if not dot or extension.lower() not in ALLOWED_EXTENSIONS:
        allowed = ", ".join(sorted(ALLOWED_EXTENSIONS))
        raise FileRejected(path, f"file type not allowed (allowed extensions: {allowed})")
    return normal


def _unfence(path: str, content: str) -> str:
    """`content` without a markdown fence wrapping all of it, else unchanged."""
    lines = content.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return content
    last = max(i for i, line in enumerate(lines) if line.strip())
    opener = _FENCE_OPEN.match(lines[first].strip())
    if first == last or opener is None or lines[last].strip() != "```":
        return content
    if path.lower().endswith(".md") and opener.group(1).lower() not in ("markdown", "md"):
        return content
    inner = lines[first + 1 : last]
    return "\n".join(inner) + "\n" if inner else ""


def validate_file(path: str, content: str, *, index: int) -> PlannedFile:
    """The file at block `index` of an answer, checked; FileRejected if it breaks a rule.

    Checks the rules of one file (path, extension, encoding, size, JSON) and the file count
    (`index` ≥ MAX_FILES is refused); the parser adds the rules that need the whole answer
    (duplicates, total size). Content wrapped in a markdown fence is unwrapped first.
    """
    if index >= MAX_FILES:
        raise FileRejected(path, f"more than {MAX_FILES} files in one answer")
    normal = _check_path(path)
    content = _unfence(normal, content)
    if "\x00" in content:
        raise FileRejected(path, "contains a NUL character: only text files are allowed")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise FileRejected(path, "not valid UTF-8 text") from err
    if size > MAX_FILE_BYTES:
        raise FileRejected(path, f"larger than {MAX_FILE_BYTES} bytes")
    name = posixpath.basename(normal).lower()
    if name.endswith(".json") and not _JSON_WITH_COMMENTS.match(name):
        try:
            json.loads(content)
        except ValueError as err:
            raise FileRejected(path, f"not valid JSON ({err})") from err
    return PlannedFile(path=normal, content=content)


@dataclass(slots=True)
class _Block:
    path: str
    index: int
    lines: list[str]
    chars: int = 0
    oversize: bool = False


class FileStreamParser:
    """Parses one answer in the file stream format, piece by piece as it streams.

    `feed` returns the files its text completed, `close` what the end of the stream decides.
    The items are the same however the text was split. One parser per answer: the caps and
    the duplicate check count from the start of the answer (or the last `reset`).
    """

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        # The unfinished last line, in pieces: joining once per line keeps a long line that
        # streams in tiny chunks linear in its length.
        self._pending: list[str] = []
        self._pending_chars = 0
        self._skipping_line = False
        self._block: _Block | None = None
        self._blocks = 0
        self._seen: set[str] = set()
        self._total_bytes = 0
        self._closed = False

    def reset(self) -> None:
        """Forget everything fed so far: the stream starts over (a provider retried it)."""
        self._start()

    def feed(self, text: str) -> list[StreamItem]:
        """Take the next piece of the stream; return the files it completed, in order."""
        if self._closed:
            raise RuntimeError("the stream is closed: reset() before feeding a new answer")
        items: list[StreamItem] = []
        start = 0
        while (newline := text.find("\n", start)) != -1:
            piece = text[start:newline]
            start = newline + 1
            if self._skipping_line:
                self._skipping_line = False
                continue
            line = self._take_pending(piece)
            if len(line) > _MAX_LINE_CHARS:
                self._overlong()
            else:
                self._line(line.removesuffix("\r"), items)
        if start < len(text) and not self._skipping_line:
            self._pending.append(text[start:])
            self._pending_chars += len(text) - start
            if self._pending_chars > _MAX_LINE_CHARS:
                self._take_pending("")
                self._overlong()
                self._skipping_line = True
        return items

    def _take_pending(self, end: str) -> str:
        line = "".join(self._pending) + end
        self._pending.clear()
        self._pending_chars = 0
        return line

    def close(self) -> list[StreamItem]:
        """The stream ended: finish a last `@@end` without a newline, refuse a cut-off block.

        An answer with no block at all comes back as one Rejected with an empty path.
        """
        if self._closed:
            return []
        items: list[StreamItem] = []
        if self._pending:  # never while skipping a line: it was dropped
            self._line(self._take_pending("").removesuffix("\r"), items)
        if self._block is not None:
            block, self._block = self._block, None
            items.append(
                Rejected(
                    block.path,
                    f"the stream ended inside {block.path or 'a file'}: truncated output",
                    block.index,
                )
            )
        elif self._blocks == 0:
            items.append(
                Rejected("", f"the answer holds no {FILE_MARKER} blocks: no file was written")
            )
        self._closed = True
        return items

    def _overlong(self) -> None:
        # A line too long for any acceptable file (whether it came whole or in pieces): not
        # a marker, and its block is too large; dropping it bounds the memory a stream holds.
        if self._block is not None:
            self._block.oversize = True
            self._block.lines.clear()

    def _line(self, line: str, items: list[StreamItem]) -> None:
        marker = line.strip()
        if _is_file_marker(marker):
            if self._block is not None:
                items.append(
                    Rejected(
                        self._block.path,
                        f"no {END_MARKER} line before the next {FILE_MARKER}",
                        self._block.index,
                    )
                )
            self._block = _Block(_header_path(marker), self._blocks, [])
            self._blocks += 1
        elif self._block is None:
            return  # chatter or fences around the answer
        elif marker == END_MARKER:
            block, self._block = self._block, None
            items.append(self._finish(block))
        elif not self._block.oversize:
            self._block.lines.append(line)
            self._block.chars += len(line) + 1
            if self._block.chars > MAX_FILE_BYTES:
                # Past the cap in characters means past it in bytes: stop buffering.
                self._block.oversize = True
                self._block.lines.clear()

    def _finish(self, block: _Block) -> StreamItem:
        try:
            if block.oversize:
                _check_path(block.path)
                raise FileRejected(block.path, f"larger than {MAX_FILE_BYTES} bytes")
            content = "".join(line + "\n" for line in block.lines)
            file = validate_file(block.path, content, index=block.index)
            if file.path.casefold() in self._seen:
                raise FileRejected(block.path, "duplicate path: this file was already written")
            size = len(file.content.encode("utf-8"))
            if self._total_bytes + size > MAX_TOTAL_BYTES:
                raise FileRejected(
                    block.path, f"the answer's files together exceed {MAX_TOTAL_BYTES} bytes"
                )
        except FileRejected as err:
            return err.rejected(block.index)
        self._seen.add(file.path.casefold())
        self._total_bytes += size
        return ParsedFile(file, block.index)


def _is_file_marker(marker: str) -> bool:
    return marker == FILE_MARKER or marker.startswith((FILE_MARKER + " ", FILE_MARKER + "\t"))


def _header_path(marker: str) -> str:
    """The path of a `@@file <path>` line, without quotes or backticks around it."""
    path = marker[len(FILE_MARKER) :].strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "`\"'":
        path = path[1:-1].strip()
    return path


def parse_files(text: str) -> tuple[list[PlannedFile], list[Rejected]]:
    """A whole answer's accepted files and rejections (feed once, then close)."""
    parser = FileStreamParser()
    items = parser.feed(text) + parser.close()
    files = [item.file for item in items if isinstance(item, ParsedFile)]
    return files, [item for item in items if isinstance(item, Rejected)]


def format_files(files: Mapping[str, str]) -> str:
    """`files` (path → content) in the stream format, in order; ValueError if not writable.

    A newline ends non-empty content that lacks one (the format keeps whole lines); a content
    line that would read as a marker, or a path with a line break, cannot be written.
    """
    out: list[str] = []
    for path, content in files.items():
        if "\n" in path or "\r" in path:
            raise ValueError(f"a path cannot hold a line break: {path!r}")
        for line in content.split("\n"):
            marker = line.strip()
            if marker == END_MARKER or _is_file_marker(marker):
                raise ValueError(f"{path}: the line {marker!r} would read as a marker")
        if content and not content.endswith("\n"):
            content += "\n"
        out.append(f"{FILE_MARKER} {path}\n{content}{END_MARKER}\n")
    return "".join(out)


def _shown(path: str) -> str:
    # Paths come from the model: escape control characters and bound the length.
    shown = json.dumps(path[:200])
    return shown[:-1] + '…"' if len(path) > 200 else shown


def repair_message(rejected: Sequence[Rejected]) -> str:
    """What to tell the model about its rejected files: each one and why, and the format.

    It asks for the rejected files only, written again; the caller keeps the accepted ones.
    """
    lines = ["Parts of your answer were rejected:"]
    for item in rejected:
        where = _shown(item.path) if item.path else "the answer"
        lines.append(f"- {where}: {item.reason}")
    lines += [
        "",
        "Write the rejected files again, fixed, in this format (text outside blocks is ignored):",
        "",
        f"{FILE_MARKER} <relative path>",
        "<the file's content>",
        END_MARKER,
        "",
        "Rules: a relative path inside the project with / separators, no part starting with a"
        " dot, no node_modules; extensions "
        + ", ".join(sorted(ALLOWED_EXTENSIONS))
        + f"; UTF-8 text, at most {MAX_FILE_BYTES} bytes a file, at most {MAX_FILES} files;"
        f" each path once; every file ends with an {END_MARKER} line; no markdown fences"
        " around a file's content.",
    ]
    return "\n".join(lines)
