"""Finding data files and reading them, gzip-compressed or not."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from recsys.data.errors import DatasetFormatError

_GZIP_MAGIC = b"\x1f\x8b"


def locate(path: Path) -> Path | None:
    """``path`` if it exists, else ``path.gz`` if that exists, else None."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed when the file is gzip data."""
    data = path.read_bytes()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetFormatError(path, None, "a complete gzip stream", f"damaged gzip data ({err})") from err
