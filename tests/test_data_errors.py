"""Malformed files, missing datasets, downloads and checksums fail with precise messages."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.data import DatasetFormatError, DatasetIntegrityError, DatasetNotFoundError, load_dataset
from recsys.data.download import extract_member, fetch, git_blob_sha1, sha256_file, verify_content
from recsys.data.formats import read_filmtrust, read_movielens_1m, read_movielens_100k, read_user_lists

pytestmark = pytest.mark.usefixtures("isolated_cache")

MALFORMED = [
    # reader, file name, content, line number, expected fragment of the message
    (read_user_lists, "train.dat", "0 1 2\n1 x 3\n", 2, "item id 'x' is not an integer"),
    (read_user_lists, "train.dat", "0 1\n1 -2\n", 2, "item id '-2' is negative"),
    (read_user_lists, "train.dat", "0 1\n-1 2\n", 2, "user id '-1' is negative"),
    (read_user_lists, "train.dat", "0 1\n1 2.5\n", 2, "item id '2.5' is not an integer"),
    (read_user_lists, "train.dat", "0 1\n\n2 3\n", 2, "empty line"),
    (read_user_lists, "train.dat", "0 1\r\n0 2\r\n0 2,3\r\n", 3, "item id '2,3' is not an integer"),
    (read_user_lists, "train.dat", "0 12345678901234567890\n", 1, "has too many digits"),
    (read_movielens_100k, "u.data", "1\t2\t3\t881250949\n1\t2\t3\n", 2, "3 fields instead of 4"),
    (read_movielens_100k, "u.data", "1\t2\tfive\t881250949\n", 1, "rating 'five' is not an integer"),
    (read_movielens_100k, "u.data", "1\t2\t3\t1\n1\t3\t6\t1\n", 2, "rating 6 is not on the scale 1..5"),
    (read_movielens_100k, "u.data", "1 2 3 881250949\n", 1, "1 fields instead of 4"),
    (read_movielens_1m, "ratings.dat", "1::2::3::4\n5::6::7\n", 2, "3 fields instead of 4"),
    (read_movielens_1m, "ratings.dat", "1::2::3::4\n1::x::3::4\n", 2, "item id 'x' is not an integer"),
    (read_filmtrust, "ratings.txt", "1 2 3.5\n1 3 abc\n", 2, "rating 'abc' is not a number"),
    (read_filmtrust, "ratings.txt", "1 2 3.5\n1 3 -1\n", 2, "rating '-1' is negative"),
    (read_filmtrust, "ratings.txt", "1 2 0.7\n", 1, "rating 0.7 is not on the scale 0.5..4 in steps of 0.5"),
    (read_filmtrust, "ratings.txt", "1 2 4.5\n", 1, "rating 4.5 is not on the scale"),
    (read_filmtrust, "ratings.txt", "1 2 3\n1 2\n", 2, "2 fields instead of 3"),
]


@pytest.mark.parametrize(("reader", "name", "content", "line", "fragment"), MALFORMED)
def test_malformed_line_is_reported_with_file_and_line(
    tmp_path: Path, reader: Callable[[Path], object], name: str, content: str, line: int, fragment: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode())
    with pytest.raises(DatasetFormatError) as caught:
        reader(path)
    message = str(caught.value)
    assert f"{path}, line {line}:" in message
    assert fragment in message
    assert "expected" in message
    assert caught.value.line == content.replace("\r\n", "\n").split("\n")[line - 1]
    assert isinstance(caught.value, ValueError)


def test_format_error_survives_pickling(tmp_path: Path) -> None:
    error = DatasetFormatError(tmp_path / "u.data", 3, "'user item'", "bad", "1 x")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.line_number == 3


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \r\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "test.dat"
    path.write_bytes(content)
    with pytest.raises(DatasetFormatError, match=re.escape(f"{path}: the file is empty")):
        read_user_lists(path)


def test_error_in_gzip_file_names_the_gz_file(tmp_path: Path) -> None:
    path = tmp_path / "train.dat.gz"
    path.write_bytes(gzip.compress(b"0 1 2\n1 3 oops\n"))
    with pytest.raises(DatasetFormatError, match=r"train\.dat\.gz, line 2: item id 'oops'"):
        read_user_lists(tmp_path / "train.dat")


def test_damaged_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train.dat.gz"
    path.write_bytes(gzip.compress(b"0 1 2\n" * 100)[:30])
    with pytest.raises(DatasetFormatError, match="damaged gzip data"):
        read_user_lists(path)


def test_long_offending_line_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "train.dat"
    path.write_text("0 " + "1 " * 5000 + "x\n")
    with pytest.raises(DatasetFormatError) as caught:
        read_user_lists(path)
    assert len(str(caught.value)) < 400
    assert "...'" in str(caught.value)


def test_missing_file_for_parser(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=re.escape("nor test.dat.gz")):
        read_user_lists(tmp_path / "test.dat")


@pytest.mark.parametrize("name", ["gowalla", "amazon-book"])
def test_missing_dataset_names_the_expected_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name, data_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / name / "train.txt") in message
    assert str(tmp_path / name / "test.txt") in message
    assert f"LightGCN-PyTorch data/{name}/" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_missing_dataset_without_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="Downloading is off") as caught:
        load_dataset("ml-100k", data_dir=tmp_path, download=False)
    assert str(tmp_path / "ml-100k" / "u.data") in str(caught.value)
    assert "files.grouplens.org/datasets/movielens/ml-100k.zip" in str(caught.value)


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TypeError):
        load_dataset("synthetic", num_userz=10)


# --- fetch and checksums -------------------------------------------------------------


def test_fetch_verifies_writes_atomically_and_caches(tmp_path: Path) -> None:
    source = tmp_path / "remote" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(b"payload " * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "data.bin"
    assert fetch(source.as_uri(), dest, digest) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]  # no temporary file left
    source.unlink()
    assert fetch(source.as_uri(), dest, digest) == dest  # cached: nothing downloaded


def test_fetch_rejects_wrong_checksum(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"payload")
    dest = tmp_path / "cache" / "data.bin"
    with pytest.raises(DatasetIntegrityError, match="expected 00"):
        fetch(source.as_uri(), dest, "00" * 32)
    assert list(dest.parent.iterdir()) == []


@pytest.mark.parametrize("url", ["file:///nonexistent/fedrec/ml-1m.zip", "http://127.0.0.1:9/ml-1m.zip"])
def test_fetch_network_failure_says_where_to_put_the_file(tmp_path: Path, url: str) -> None:
    dest = tmp_path / "cache" / "ml-1m.zip"
    with pytest.raises(DatasetNotFoundError) as caught:
        fetch(url, dest, timeout=5)
    assert url in str(caught.value) and str(dest) in str(caught.value)
    assert not dest.exists()


def test_git_blob_sha1_matches_git_hash_object(tmp_path: Path) -> None:
    empty, hello, binary = tmp_path / "empty", tmp_path / "hello", tmp_path / "binary"
    empty.write_bytes(b"")
    hello.write_bytes(b"hello\n")
    binary.write_bytes(bytes(range(256)) * 3)
    assert git_blob_sha1(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # as `git hash-object` prints
    assert git_blob_sha1(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"
    content = binary.read_bytes()
    assert git_blob_sha1(binary) == hashlib.sha1(b"blob 768\0" + content).hexdigest()


def test_verify_content_checks_decompressed_data(tmp_path: Path) -> None:
    path = tmp_path / "u.data.gz"
    path.write_bytes(gzip.compress(b"hello\n"))
    hello_sha256 = hashlib.sha256(b"hello\n").hexdigest()
    verify_content(path, sha256=hello_sha256, git_blob="ce013625030ba8dba906f756967f9e9ca394464a")
    assert sha256_file(path) != hello_sha256
    with pytest.raises(DatasetIntegrityError, match="git blob id"):
        verify_content(path, git_blob="0" * 40)


def test_extract_from_damaged_archive(tmp_path: Path) -> None:
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetIntegrityError, match="delete it and retry"):
        extract_member(archive, "ml-100k/u.data", tmp_path / "out" / "u.data")
