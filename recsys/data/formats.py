"""Strict parsers for the text formats of the supported datasets.

Every parser takes a path to a plain or gzip-compressed file (``train.dat`` also finds
``train.dat.gz``), accepts LF and CRLF line ends, and raises ``DatasetFormatError`` naming
the file, the 1-based line number and the problem at the first malformed line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.data.dataset import Interactions, Ratings
from recsys.data.errors import DatasetFormatError, DatasetNotFoundError
from recsys.data.files import locate, read_bytes

_INTEGER = "[0-9]{1,15}"  # non-negative, and exact as float64 too
_NUMBER = "[0-9]+(?:\\.[0-9]+)?"
_USER, _ITEM, _TIMESTAMP = ("user id", _INTEGER), ("item id", _INTEGER), ("timestamp", _INTEGER)


@dataclass(frozen=True)
class _Layout:
    """What every line of a format looks like."""

    expected: str  # shown in error messages
    separator: str | None  # None: runs of blanks
    fields: tuple[tuple[str, str], ...]  # (name, regex) of the leading fields
    repeated: tuple[str, str] | None = None  # (name, regex) of any number of further fields


_USER_LISTS = _Layout("'user item item ...' (blank-separated non-negative integer ids)", None, (_USER,), _ITEM)
_MOVIELENS_100K = _Layout(
    "'user<TAB>item<TAB>rating<TAB>timestamp' (integers)", "\t", (_USER, _ITEM, ("rating", _INTEGER), _TIMESTAMP)
)
_MOVIELENS_1M = _Layout(
    "'UserID::MovieID::Rating::Timestamp' (integers)", "::", (_USER, _ITEM, ("rating", _INTEGER), _TIMESTAMP)
)
_FILMTRUST = _Layout("'user item rating' (single spaces, integer ids)", " ", (_USER, _ITEM, ("rating", _NUMBER)))


def read_user_lists(path: str | Path) -> Interactions:
    """``user item item ...`` lines (0-based ids) as one row per user id up to the largest.

    A line may hold only the user id; several lines of one user are merged in file order;
    users without a line get an empty row.
    """
    _, text = _read_valid_text(Path(path), _USER_LISTS)
    values = np.fromstring(text, dtype=np.int64, sep=" ")
    per_line = _fields_per_line(text)
    first = np.zeros(len(per_line), dtype=np.int64)
    np.cumsum(per_line[:-1], out=first[1:])
    users = values[first]
    is_item = np.ones(len(values), dtype=bool)
    is_item[first] = False
    return Interactions.from_pairs(np.repeat(users, per_line - 1), values[is_item], int(users.max()) + 1)


def read_movielens_100k(path: str | Path) -> Ratings:
    """MovieLens-100K ``u.data``; raw (1-based) ids, file order."""
    return _read_ratings(Path(path), _MOVIELENS_100K, (1.0, 5.0), 1.0)


def read_movielens_1m(path: str | Path) -> Ratings:
    """MovieLens-1M ``ratings.dat``; raw (1-based) ids, file order."""
    return _read_ratings(Path(path), _MOVIELENS_1M, (1.0, 5.0), 1.0)


def read_filmtrust(path: str | Path) -> Ratings:
    """FilmTrust ``ratings.txt``; raw (1-based) ids, file order, repeated pairs kept."""
    return _read_ratings(Path(path), _FILMTRUST, (0.5, 4.0), 0.5)


def _read_ratings(path: Path, layout: _Layout, scale: tuple[float, float], step: float) -> Ratings:
    path, text = _read_valid_text(path, layout)
    is_float = any(pattern == _NUMBER for _, pattern in layout.fields)
    table = _numbers(text, layout, np.float64 if is_float else np.int64).reshape(-1, len(layout.fields))
    values = table[:, 2].astype(np.float64)
    lo, hi = scale
    off_scale = (values < lo) | (values > hi) | ~np.isclose(np.round(values / step) * step, values)
    if off_scale.any():
        row = int(np.argmax(off_scale))
        problem = f"rating {values[row]:g} is not on the scale {lo:g}..{hi:g} in steps of {step:g}"
        raise DatasetFormatError(path, row + 1, layout.expected, problem, text.split("\n")[row])
    users, items = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
    return Ratings(users, items, values.astype(np.float32), scale, step)


def _read_valid_text(path: Path, layout: _Layout) -> tuple[Path, str]:
    """The file's text without its final newline, once every line matches ``layout``."""
    found = locate(path)
    if found is None:
        raise DatasetNotFoundError(f"{path} does not exist (nor {path.name}.gz next to it)")
    text = read_bytes(found).decode("latin-1").replace("\r\n", "\n")
    text = text.removesuffix("\n")
    if not text.strip():
        raise DatasetFormatError(found, None, layout.expected, "the file is empty")
    bad = _bad_line_regex(layout).search(text)
    if bad is not None:
        line_number = text.count("\n", 0, bad.start()) + 1
        raise DatasetFormatError(found, line_number, layout.expected, _problem(bad.group(), layout), bad.group())
    return found, text


@functools.cache
def _bad_line_regex(layout: _Layout) -> re.Pattern[str]:
    """Finds the first line that does not match ``layout``."""
    separator = "[ \t]+" if layout.separator is None else re.escape(layout.separator)
    line = separator.join(pattern for _, pattern in layout.fields)
    if layout.repeated is not None:
        line += f"(?:{separator}{layout.repeated[1]})*"
    if layout.separator is None:
        line = f"[ \t]*{line}[ \t]*"
    return re.compile(f"^(?!{line}$).*$", re.MULTILINE)


def _problem(line: str, layout: _Layout) -> str:
    """Why ``line`` does not match ``layout``, in words."""
    if not line.strip():
        return "empty line"
    values = line.split(layout.separator)
    if layout.repeated is None and len(values) != len(layout.fields):
        return f"{len(values)} fields instead of {len(layout.fields)}"
    extra = len(values) - len(layout.fields)
    kinds = layout.fields + ((layout.repeated,) * extra if layout.repeated else ())
    for value, (name, pattern) in zip(values, kinds, strict=True):
        if not re.fullmatch(pattern, value):
            return f"{name} {value!r} {_why_invalid(value, pattern)}"
    return "stray blanks or separators"


def _why_invalid(value: str, pattern: str) -> str:
    if pattern == _INTEGER:
        if re.fullmatch("-[0-9]+", value):
            return "is negative"
        return "has too many digits" if re.fullmatch("[0-9]+", value) else "is not an integer"
    try:
        number = float(value)
    except ValueError:
        return "is not a number"
    return "is negative" if number < 0 else "is not a plain decimal number"


def _numbers(text: str, layout: _Layout, dtype: type) -> np.ndarray:
    """All fields of the (validated) text, in order."""
    blank_separated = text if layout.separator is None else text.replace(layout.separator, " ")
    return np.fromstring(blank_separated, dtype=dtype, sep=" ")


def _fields_per_line(text: str) -> np.ndarray:
    """Number of fields on each line of the (validated, digits-and-blanks) text."""
    chars = np.frombuffer(text.encode("latin-1"), dtype=np.uint8)
    is_digit = (chars >= ord("0")) & (chars <= ord("9"))
    starts = np.flatnonzero(is_digit[1:] & ~is_digit[:-1]) + 1
    if is_digit[0]:
        starts = np.concatenate(([0], starts))
    newlines = np.flatnonzero(chars == ord("\n"))
    return np.bincount(np.searchsorted(newlines, starts), minlength=len(newlines) + 1)
