"""Property tests of the list-file format: round trips, comments and blank lines, no escaping paths."""

from __future__ import annotations

import os
import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levit_edge.data.list_format import ListEntry, format_list, parse_list
from levit_edge.errors import UserError

# Per-test settings (not a loaded profile, which would change every other test module's settings too).
fast = settings(max_examples=100, deadline=None)

# Name characters of real datasets, including the awkward ones: spaces, '#', digits, non-ASCII.
SAFE_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="/\\\n\r"
)
ANY_CHAR = st.characters(codec="utf-8", exclude_categories=["Cs"])
segment = st.text(SAFE_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
# Plain segments (no whitespace, no leading '#') are always writable: keeps properties non-vacuous.
_PLAIN = "abcXYZ019_"
plain_segment = st.tuples(st.sampled_from(_PLAIN), st.text(_PLAIN + ".#-", max_size=11)).map("".join)


def paths(seg: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(seg, min_size=1, max_size=4).map("/".join)


def entry_lists(seg: st.SearchStrategy[str]) -> st.SearchStrategy[list[ListEntry]]:
    """Unique paths, with labels on all entries or on none."""
    return st.tuples(st.lists(paths(seg), min_size=0, max_size=8, unique=True), st.booleans()).flatmap(
        lambda t: st.lists(st.integers(0, 10**6), min_size=len(t[0]), max_size=len(t[0])).map(
            lambda labels: [ListEntry(p, lab if t[1] else None) for p, lab in zip(t[0], labels, strict=True)]
        )
    )


comment_or_blank = st.one_of(
    st.just(""),
    st.text(" \t", max_size=3),
    st.text(SAFE_CHARS, max_size=20).map(lambda s: "#" + s),
    st.text(SAFE_CHARS, max_size=20).map(lambda s: "  # " + s),
)


@fast
@given(entry_lists(plain_segment))
def test_round_trip_plain_names(entries: list[ListEntry]) -> None:
    assert parse_list(format_list(entries, header="calibration\nseed 0")) == entries


@fast
@given(entry_lists(segment))
def test_round_trip_or_refuse_any_names(entries: list[ListEntry]) -> None:
    # Names with spaces, '#' or a trailing number may not be writable unambiguously; then the writer
    # refuses rather than writing a list that reads back differently.
    try:
        text = format_list(entries)
    except ValueError:
        return
    assert parse_list(text) == entries


@fast
@given(entry_lists(plain_segment), st.data())
def test_comments_and_blank_lines_are_ignored(entries: list[ListEntry], data: st.DataObject) -> None:
    lines = format_list(entries).splitlines()
    mixed: list[str] = []
    for line in lines:
        mixed += data.draw(st.lists(comment_or_blank, max_size=2))
        # surrounding whitespace and CRLF line ends do not matter either
        mixed.append(
            data.draw(st.sampled_from(["", " ", "\t"])) + line + data.draw(st.sampled_from(["", "\r"]))
        )
    mixed += data.draw(st.lists(comment_or_blank, max_size=2))
    assert parse_list("\n".join(mixed)) == entries


@fast
@given(entry_lists(plain_segment), st.data())
def test_error_names_the_bad_line(entries: list[ListEntry], data: st.DataObject) -> None:
    lines = format_list(entries).splitlines() + data.draw(st.lists(comment_or_blank, max_size=3))
    position = data.draw(st.integers(0, len(lines)))
    bad = data.draw(st.sampled_from(["../outside.png", "/abs.png", "a/../../b.png", "x.png -4"]))
    lines.insert(position, bad)
    with pytest.raises(UserError, match=rf"line {position + 1}:"):
        parse_list("\n".join(lines), origin="list")


def _escape_paths() -> st.SearchStrategy[str]:
    """Paths that leave the root: absolute, drive-letter, or with a '..' that climbs out."""
    inner = paths(plain_segment)
    return st.one_of(
        inner.map(lambda p: "/" + p),
        st.tuples(st.sampled_from("CDz"), inner).map(lambda t: f"{t[0]}:/{t[1]}"),
        st.tuples(inner, st.integers(1, 3), inner).map(
            lambda t: f"{t[0]}/{'../' * (t[0].count('/') + 1 + t[1])}{t[2]}"
        ),
        st.tuples(st.integers(1, 3), inner).map(lambda t: "../" * t[0] + t[1]),
        inner.map(lambda p: p.replace("/", "\\") + "\\..\\..\\x"),
    )


@fast
@given(_escape_paths(), st.booleans())
def test_escaping_paths_are_refused(path: str, labelled: bool) -> None:
    with pytest.raises(UserError, match="line 1:"):
        parse_list(path + (" 3" if labelled else ""))


# Mostly path punctuation, so that '..', '/', ':' and friends meet in every arrangement.
path_soup = st.lists(
    st.one_of(
        st.sampled_from(["a", "b", ".", "..", "/", "\\", " ", "\t", "\n", "\r", "#", "1", "-", ":", "C"]),
        ANY_CHAR,
    ),
    max_size=40,
).map("".join)


@fast
@given(path_soup)
def test_nothing_accepted_escapes_the_root(text: str) -> None:
    # Whatever the input, an accepted entry stays under the root once joined and normalized.
    try:
        entries = parse_list(text)
    except UserError as e:
        assert "\n" not in str(e)
        return
    root = "/data/root"
    for entry in entries:
        assert not entry.path.startswith("/") and "\\" not in entry.path
        assert ".." not in entry.path.split("/")
        joined = posixpath.normpath(posixpath.join(root, entry.path))
        assert joined.startswith(root + "/"), entry
        assert os.path.commonpath([root, joined]) == root


@fast
@given(st.lists(paths(plain_segment), min_size=2, max_size=5, unique=True))
def test_duplicates_refused(items: list[str]) -> None:
    text = "\n".join([*items, items[0]])
    with pytest.raises(UserError, match=rf"line {len(items) + 1}: duplicate"):
        parse_list(text)
