"""The list-file format: one relative image path per line, optionally followed by a class index.

The format of the calibration lists in calibration/lists (MLPerf's ImageNet calibration lists among
them); blank lines and ``#`` lines are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from levit_edge.errors import UserError

# ASCII digits only: str.isdigit() accepts e.g. "²", which int() then rejects.
_LABELLED_LINE = re.compile(r"(?P<path>.*?)\s+(?P<label>-?[0-9]+)")
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
LABEL_LIMIT = 2**31  # no classifier has this many classes; also keeps labels far inside int64


@dataclass(frozen=True)
class ListEntry:
    """One list-file item: a normalized relative POSIX path and an optional class index."""

    path: str
    label: int | None = None


def _check_relative(path: str) -> str | None:
    """Why ``path`` cannot be a list entry (None if it can); a purely lexical check, so it is portable."""
    if _CONTROL.search(path):
        return "path contains a control character"
    if "\\" in path:
        return "path contains a backslash (use '/')"
    if path.startswith("/") or _DRIVE.match(path):
        return f"absolute path {path!r} is not allowed (paths are relative to the data root)"
    if ".." in PurePosixPath(path).parts:
        return f"path {path!r} uses '..' (paths may not leave the data root)"
    if PurePosixPath(path).as_posix() == ".":
        return "empty path"
    return None


def parse_list(text: str, origin: str = "<list>") -> list[ListEntry]:
    """Parse list-file text: one ``relative/path [label]`` per line.

    Blank lines and lines starting with ``#`` are ignored. The label is the last whitespace-separated
    token when it is a non-negative integer; labels are all-or-none. Absolute paths, ``..``, backslashes
    and duplicates are refused with a UserError naming ``origin`` and the line number.
    """
    entries: list[ListEntry] = []
    seen: dict[str, int] = {}
    first_line: int | None = None
    first_labelled = False
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{origin} line {lineno}"
        match = _LABELLED_LINE.fullmatch(line)
        label: int | None = None
        if match:
            path, label = match["path"], int(match["label"])
            if label < 0:
                raise UserError(f"{where}: label {label} is negative (expected 'path [class index]')")
            if label >= LABEL_LIMIT:
                raise UserError(f"{where}: label {label} is not a class index (too large)")
        else:
            path = line
        problem = _check_relative(path)
        if problem:
            raise UserError(f"{where}: {problem}")
        path = PurePosixPath(path).as_posix()
        if first_line is None:
            first_line, first_labelled = lineno, label is not None
        elif (label is not None) != first_labelled:
            if first_labelled:
                problem = f"no label, but line {first_line} has one (labels are all-or-none)"
            else:
                problem = f"a label, but line {first_line} has none (labels are all-or-none)"
            raise UserError(f"{where}: {problem}")
        if path in seen:
            raise UserError(f"{where}: duplicate entry {path!r} (first on line {seen[path]})")
        seen[path] = lineno
        entries.append(ListEntry(path, label))
    return entries


def format_list(entries: Iterable[ListEntry], header: str | None = None) -> str:
    """Serialize entries so that ``parse_list`` gives them back; ValueError for a path that would not."""
    entries = list(entries)
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    labelled = {e.label is not None for e in entries}
    if len(labelled) > 1:
        raise ValueError("labels are all-or-none: some entries have a label and some do not")
    for entry in entries:
        line = entry.path if entry.label is None else f"{entry.path} {entry.label}"
        # Round-trip each line rather than re-deriving the parser's rules (leading '#', a trailing
        # number in an unlabelled name, odd whitespace...).
        try:
            parsed = parse_list(line)
        except UserError as e:
            raise ValueError(f"cannot write list entry {entry.path!r}: {e}") from None
        if parsed != [entry]:
            raise ValueError(f"cannot write list entry {entry.path!r}: it would not read back unchanged")
        lines.append(line)
    return "\n".join(lines) + "\n"


def read_list_file(path: Path) -> list[ListEntry]:
    """Read and parse a list file; UserError if it is missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except FileNotFoundError:
        raise UserError(f"list file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read list file {path}: {e}") from None
    return parse_list(text, origin=f"list file {path}")
