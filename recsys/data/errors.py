"""Errors raised while locating, fetching and parsing datasets."""

from __future__ import annotations

from pathlib import Path

_MAX_SHOWN = 100  # characters of an offending line quoted in a message


class DatasetError(Exception):
    """Base class of every dataset error below."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file is missing; the message says which file to put where and where to get it."""


class DatasetIntegrityError(DatasetError, ValueError):
    """A file does not match its known checksum, or an archive is damaged."""


class DatasetFormatError(DatasetError, ValueError):
    """A data file breaks its format; the message names the file, the line and the problem."""

    def __init__(
        self, path: Path, line_number: int | None, expected: str, problem: str, line: str | None = None
    ) -> None:
        self.path = path
        self.line_number = line_number
        self.expected = expected
        self.problem = problem
        self.line = line
        where = f"{path}, line {line_number}" if line_number is not None else str(path)
        message = f"{where}: {problem}; expected {expected}"
        if line is not None:
            shown = line if len(line) <= _MAX_SHOWN else line[:_MAX_SHOWN] + "..."
            message += f"; got {shown!r}"
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:  # picklable across worker processes
        return type(self), (self.path, self.line_number, self.expected, self.problem, self.line)
