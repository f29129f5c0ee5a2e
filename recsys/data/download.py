"""Fetching, extracting and verifying data files: atomic writes, sha256 and git blob ids."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from recsys.data.errors import DatasetIntegrityError, DatasetNotFoundError
from recsys.data.files import read_bytes

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id ``git hash-object`` prints for the file: sha1 of ``b"blob <size>\\0" + content``."""
    return _git_blob_id(Path(path).read_bytes())


def verify_content(path: Path, *, sha256: str | None = None, git_blob: str | None = None) -> None:
    """Check the (decompressed, if gzip) content of ``path`` against the given checksums."""
    data = read_bytes(path)
    if sha256 is not None:
        _compare(path, "sha256", hashlib.sha256(data).hexdigest(), sha256)
    if git_blob is not None:
        _compare(path, "git blob id", _git_blob_id(data), git_blob)


def fetch(url: str, dest: Path, sha256: str | None = None, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right sha256 is already there.

    The download goes to a temporary file next to ``dest`` and is renamed only once
    complete and verified. Network failures raise ``DatasetNotFoundError`` saying where
    to put the file by hand.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            _write_atomically(dest, response, lambda part: _check_sha256(part, sha256, url))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DatasetNotFoundError(
            f"Could not download {url} ({reason}); download it by hand and save it as {dest}"
        ) from err
    return dest


def extract_member(
    archive: Path, member: str, dest: Path, *, sha256: str | None = None, git_blob: str | None = None
) -> Path:
    """Extract ``member`` of the zip ``archive`` to ``dest`` (atomically), verified by checksum."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(member) as source:
            _write_atomically(dest, source, lambda part: verify_content(part, sha256=sha256, git_blob=git_blob))
    except (zipfile.BadZipFile, KeyError, EOFError) as err:
        raise DatasetIntegrityError(f"{archive} is damaged or lacks {member} ({err}); delete it and retry") from err
    return dest


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check_sha256(path: Path, expected: str | None, origin: str) -> None:
    if expected is not None and (found := sha256_file(path)) != expected:
        raise DatasetIntegrityError(f"{origin}: download has sha256 {found}, expected {expected}")


def _compare(path: Path, kind: str, found: str, expected: str) -> None:
    if found != expected:
        raise DatasetIntegrityError(
            f"{path}: content has {kind} {found}, expected {expected}; the file is damaged or another version"
        )


def _write_atomically(dest: Path, source: IO[bytes], check: Callable[[Path], None]) -> None:
    """Copy ``source`` to a temporary file beside ``dest``, ``check`` it, then rename it to ``dest``."""
    handle, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    part = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
        check(part)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
