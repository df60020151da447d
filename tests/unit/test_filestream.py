"""The codegen file stream format: incremental parsing, validation, repair text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.filestream import (
    MAX_TOTAL_BYTES,
    FileRejected,
    FileStreamParser,
    ParsedFile,
    Rejected,
    StreamItem,
    format_files,
    parse_files,
    repair_message,
    validate_file,
)
from schemas.plan import MAX_FILE_BYTES, MAX_FILES


def feed_all(chunks: list[str]) -> list[StreamItem]:
    """Every item a parser hands back for `chunks`, close() included."""
    parser = FileStreamParser()
    items: list[StreamItem] = []
    for chunk in chunks:
        items += parser.feed(chunk)
    return items + parser.close()


def accepted(items: list[StreamItem]) -> dict[str, str]:
    return {i.path: i.content for i in items if isinstance(i, ParsedFile)}


def rejected(items: list[StreamItem]) -> list[Rejected]:
    return [i for i in items if isinstance(i, Rejected)]


def only_rejection(text: str) -> Rejected:
    items = feed_all([text])
    assert accepted(items) == {}
    [item] = rejected(items)
    return item


# ------------------------------------------------------------------ any split, same files

_PATHS = ["index.html", "app.js", "src/util.mjs", "styles.css", "README.md", "notes.txt"]
# Lines a file can hold and the format can carry: no line breaks, NUL or surrogates, nothing
# that reads as a marker or a fence.
_line = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\n\r\x00"), max_size=30
).filter(lambda s: not s.strip().startswith(("@@", "```")))
_content = st.lists(_line, max_size=6).map(lambda ls: "".join(line + "\n" for line in ls))
_files = st.dictionaries(st.sampled_from(_PATHS), _content, min_size=1)


@given(files=_files, data=st.data())
def test_any_split_of_a_stream_yields_the_same_files(files: dict[str, str], data: st.DataObject):
    """However the text is cut into chunks, the parser finds the same files, in order."""
    stream = "Here is the app:\n```\n" + format_files(files) + "```\nEnjoy!"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    items = feed_all(chunks)

    assert items == feed_all([stream])
    assert rejected(items) == []
    assert list(accepted(items).items()) == list(files.items())


def test_a_file_arrives_as_soon_as_its_end_line_is_complete() -> None:
    """`@@end` split over chunks completes the file on its newline, not before."""
    parser = FileStreamParser()
    assert parser.feed("@@file a.txt\nhé") == []
    assert parser.feed("llo\n@@e") == []
    assert parser.feed("nd") == []
    [item] = parser.feed("\n@@file b.txt\n")
    assert isinstance(item, ParsedFile)
    assert item.index == 0
    assert (item.path, item.content) == ("a.txt", "héllo\n")


def test_one_character_at_a_time() -> None:
    stream = format_files({"index.html": "<p>ünïcode ✓</p>\n", "app.js": "let x = 1;\n"})
    assert accepted(feed_all(list(stream))) == {
        "index.html": "<p>ünïcode ✓</p>\n",
        "app.js": "let x = 1;\n",
    }


def test_a_last_end_line_without_newline_completes_at_close() -> None:
    parser = FileStreamParser()
    assert parser.feed("@@file a.txt\nx\n@@end") == []
    [item] = parser.close()
    assert isinstance(item, ParsedFile)
    assert item.content == "x\n"


def test_crlf_line_endings_split_between_cr_and_lf() -> None:
    items = feed_all(["@@file a.txt\r", "\nx\r", "\n@@end\r", "\n"])
    assert accepted(items) == {"a.txt": "x\n"}


def test_indented_markers_and_quoted_paths() -> None:
    items = feed_all(["  @@file `src/a.js`\nlet a;\n  @@end  \n@@file 'b.css'\n@@end\n"])
    assert accepted(items) == {"src/a.js": "let a;\n", "b.css": ""}


def test_a_line_that_only_starts_like_a_marker_is_content() -> None:
    items = feed_all(["@@file a.md\n@@endless\n@@files\n@@end\n"])
    assert accepted(items) == {"a.md": "@@endless\n@@files\n"}


def test_text_outside_blocks_is_ignored() -> None:
    text = "Sure! Here it is.\n@@end\n```text\n@@file a.txt\nhi\n@@end\nThat's all.\n```\n"
    assert feed_all([text]) == [ParsedFile(validate_file("a.txt", "hi\n", index=0), 0)]


# ------------------------------------------------------------------------------ rejections


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../x.js", "unsafe path"),
        ("a/../../x.js", "unsafe path"),
        ("/etc/passwd", "unsafe path"),
        ("a\\b.js", "unsafe path"),
        ("a\x00.js", "unsafe path"),
        ("a\x1b.js", "unsafe path"),
        (".git/config", "hidden or tooling path"),
        (".env", "hidden or tooling path"),
        ("src/.hidden/a.js", "hidden or tooling path"),
        ("node_modules/x/index.js", "hidden or tooling path"),
        ("run.sh", "file type not allowed"),
        ("Makefile", "file type not allowed"),
        ("logo.png", "file type not allowed"),
        ("x" * 301 + ".js", "longer than 300"),
        ("", "no path after @@file"),
    ],
)
def test_bad_paths_are_rejected_with_a_reason(path: str, reason: str) -> None:
    item = only_rejection(f"@@file {path}\ncontent\n@@end\n")
    assert item.path == path
    assert reason in item.reason
    assert item.index == 0


def test_paths_are_normalised() -> None:
    items = feed_all(["@@file ./src//a.js\n@@end\n@@file INDEX.HTML\n<p></p>\n@@end\n"])
    assert accepted(items) == {"src/a.js": "", "INDEX.HTML": "<p></p>\n"}


def test_nul_in_content_is_rejected() -> None:
    assert "NUL" in only_rejection("@@file a.txt\nab\x00c\n@@end\n").reason


def test_a_lone_surrogate_is_not_utf8() -> None:
    assert "UTF-8" in only_rejection("@@file a.txt\n\ud800\n@@end\n").reason


def test_truncated_json_file_is_rejected() -> None:
    item = only_rejection('@@file data.json\n{"items": [1, 2\n@@end\n')
    assert item.reason.startswith("not valid JSON")


def test_tsconfig_may_hold_comments() -> None:
    text = '@@file tsconfig.json\n{ // strict\n  "compilerOptions": {}\n}\n@@end\n'
    assert list(accepted(feed_all([text]))) == ["tsconfig.json"]


@pytest.mark.parametrize(
    "garbage",
    [
        '{"files": [{"path": "index.html", "content": "<ht',
        "I'm sorry, I can't help with that.",
        "",
        "```html\n<p>no markers</p>\n```\n",
    ],
)
def test_an_answer_without_blocks_is_one_rejection(garbage: str) -> None:
    """Truncated JSON, refusals, bare code: nothing to parse, and the repair says so."""
    item = only_rejection(garbage)
    assert item.path == ""
    assert "no @@file blocks" in item.reason
    assert "the answer:" in repair_message([item])


def test_truncated_stream_is_rejected_at_close() -> None:
    parser = FileStreamParser()
    [first] = parser.feed("@@file a.txt\nx\n@@end\n@@file b.js\nlet x = ")
    assert isinstance(first, ParsedFile)
    assert parser.close() == [Rejected("b.js", "the stream ended inside b.js: truncated output", 1)]
    assert parser.close() == []
    with pytest.raises(RuntimeError, match="closed"):
        parser.feed("more")


def test_a_block_without_end_before_the_next_is_rejected() -> None:
    items = feed_all(["@@file a.js\nlet a;\n@@file b.js\nlet b;\n@@end\n"])
    assert rejected(items) == [Rejected("a.js", "no @@end line before the next @@file", 0)]
    assert accepted(items) == {"b.js": "let b;\n"}


def test_a_duplicate_path_is_rejected_and_the_first_stands() -> None:
    items = feed_all(["@@file a.js\n1;\n@@end\n@@file ./A.js\n2;\n@@end\n"])
    assert accepted(items) == {"a.js": "1;\n"}
    [item] = rejected(items)
    assert (item.path, item.index) == ("./A.js", 1)
    assert "duplicate path" in item.reason


# ------------------------------------------------------------------------------------ caps


def test_at_most_max_files_blocks() -> None:
    files = {f"f{i}.txt": f"{i}\n" for i in range(MAX_FILES + 1)}
    items = feed_all([format_files(files)])
    assert len(accepted(items)) == MAX_FILES
    [item] = rejected(items)
    assert (item.path, item.index) == (f"f{MAX_FILES}.txt", MAX_FILES)
    assert f"more than {MAX_FILES} files" in item.reason


def test_a_file_over_the_size_cap_is_rejected() -> None:
    exact = "a" * (MAX_FILE_BYTES - 1) + "\n"
    items = feed_all([format_files({"ok.txt": exact, "big.txt": exact + "b\n"})])
    assert list(accepted(items)) == ["ok.txt"]
    assert rejected(items) == [Rejected("big.txt", f"larger than {MAX_FILE_BYTES} bytes", 1)]


def test_the_size_cap_counts_utf8_bytes() -> None:
    """Fewer characters than the cap, more bytes: refused."""
    content = "é" * (MAX_FILE_BYTES // 2) + "\n"
    assert "larger than" in only_rejection(format_files({"a.txt": content})).reason


@pytest.mark.parametrize("chunk", [1000, 65_536, 10 * MAX_FILE_BYTES])
def test_an_overlong_line_is_rejected_whatever_the_chunks(chunk: int) -> None:
    """One line longer than any file may be: refused without being held whole."""
    stream = "@@file big.js\n" + "x" * (2 * MAX_FILE_BYTES) + "\n@@end\n@@file a.js\n@@end\n"
    stream = "y" * (2 * MAX_FILE_BYTES) + "\n" + stream  # chatter as long, outside blocks
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    items = feed_all(chunks)
    assert accepted(items) == {"a.js": ""}
    assert rejected(items) == [Rejected("big.js", f"larger than {MAX_FILE_BYTES} bytes", 0)]


def test_the_answer_total_is_capped() -> None:
    size = 500 * 1024
    files = {f"f{i}.txt": "a" * (size - 1) + "\n" for i in range(5)}
    items = feed_all([format_files(files)])
    assert len(accepted(items)) == MAX_TOTAL_BYTES // size
    [item] = rejected(items)
    assert item.path == "f4.txt"
    assert f"together exceed {MAX_TOTAL_BYTES} bytes" in item.reason


# ---------------------------------------------------------------------------------- fences


@pytest.mark.parametrize(
    ("path", "content", "expected"),
    [
        ("index.html", "```html\n<p>x</p>\n```\n", "<p>x</p>\n"),
        ("app.js", "\n```javascript\nlet a;\n\nlet b;\n```\n\n", "let a;\n\nlet b;\n"),
        ("app.js", "```\nlet a;\n```", "let a;\n"),
        ("a.css", "```css\n```\n", ""),
        ("README.md", "```markdown\n# Hi\n```bash\nls\n```\n```\n", "# Hi\n```bash\nls\n```\n"),
        ("README.md", "```bash\nnpm start\n```\n", "```bash\nnpm start\n```\n"),
        ("app.js", "```js\nlet a;\n", "```js\nlet a;\n"),
        ("app.js", "let s = `\n```\n`;\n", "let s = `\n```\n`;\n"),
    ],
)
def test_a_fence_around_the_whole_content_is_stripped(
    path: str, content: str, expected: str
) -> None:
    assert validate_file(path, content, index=0).content == expected


def test_a_fence_around_json_is_stripped_before_parsing() -> None:
    items = feed_all(['@@file a.json\n```json\n{"a": 1}\n```\n@@end\n'])
    assert accepted(items) == {"a.json": '{"a": 1}\n'}


# ------------------------------------------------------------------------- validate, reset


def test_validate_file_raises_file_rejected() -> None:
    assert validate_file("./src/a.js", "x\n", index=0).path == "src/a.js"
    with pytest.raises(FileRejected) as caught:
        validate_file("a.js", "x\n", index=MAX_FILES)
    assert caught.value.path == "a.js"
    assert caught.value.rejected(MAX_FILES) == Rejected(
        "a.js", f"more than {MAX_FILES} files in one answer", MAX_FILES
    )


def test_reset_forgets_a_partial_stream() -> None:
    """A provider retried a dropped stream: the new attempt is parsed from scratch."""
    parser = FileStreamParser()
    assert len(parser.feed("@@file a.js\n1;\n@@end\n@@file b.js\nlet dropped")) == 1
    parser.reset()
    items = parser.feed("@@file a.js\n2;\n@@end\n@@file c.js\n3;\n@@end\n") + parser.close()
    assert accepted(items) == {"a.js": "2;\n", "c.js": "3;\n"}
    assert rejected(items) == []
    assert [i.index for i in items] == [0, 1]


def test_reset_reopens_a_closed_parser() -> None:
    parser = FileStreamParser()
    parser.close()
    parser.reset()
    assert len(parser.feed("@@file a.js\n@@end\n")) == 1


def test_parse_files_splits_files_and_rejections() -> None:
    files, problems = parse_files("@@file a.js\n1;\n@@end\n@@file ../b.js\n@@end\n")
    assert [(f.path, f.content) for f in files] == [("a.js", "1;\n")]
    assert [p.path for p in problems] == ["../b.js"]


# ------------------------------------------------------------------------ format and repair


def test_format_files_ends_content_with_a_newline() -> None:
    text = format_files({"a.txt": "x", "b.txt": "", "c.txt": "y\n"})
    assert text == "@@file a.txt\nx\n@@end\n@@file b.txt\n@@end\n@@file c.txt\ny\n@@end\n"


@pytest.mark.parametrize(
    ("path", "content"),
    [("a.txt", "x\n@@end\n"), ("a.txt", "  @@file b.txt\n"), ("a\nb.txt", "")],
)
def test_format_files_refuses_what_the_format_cannot_carry(path: str, content: str) -> None:
    with pytest.raises(ValueError, match=r"marker|line break"):
        format_files({path: content})


def test_repair_message_lists_each_file_and_restates_the_format() -> None:
    message = repair_message(
        [
            Rejected("../x.js", "unsafe path: it must be a relative path inside the project"),
            Rejected("b\x1b.js", "unsafe path"),
            Rejected("c.js", "the stream ended inside c.js: truncated output", 2),
        ]
    )
    assert '- "../x.js": unsafe path: it must be a relative path' in message
    assert '- "b\\u001b.js": unsafe path' in message  # the escape, not the raw byte
    assert "\x1b" not in message
    assert '- "c.js": the stream ended inside c.js: truncated output' in message
    assert "@@file <relative path>\n<the file's content>\n@@end" in message
    assert f"at most {MAX_FILES} files" in message
