"""Atomic writes leave files with the mode a plain write would give them."""

from __future__ import annotations

import os
import stat

import pytest

from plmlens.ioutils import write_bytes_atomic, write_text_atomic


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_get_0666_less_the_umask(tmp_path, umask_027):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = write_text_atomic(tmp_path / "sub" / "report.html", "<html></html>")
    assert _mode(atomic) == _mode(plain) == 0o640  # group-readable, not the temporary file's 0600
    assert atomic.read_text() == "<html></html>"
    assert not [p for p in atomic.parent.iterdir() if p.name.endswith(".tmp")]


def test_existing_files_keep_their_mode(tmp_path, umask_027):
    path = tmp_path / "shared.npz"
    path.write_bytes(b"old")
    path.chmod(0o664)
    write_bytes_atomic(path, b"new")
    assert _mode(path) == 0o664 and path.read_bytes() == b"new"
    path.chmod(0o600)
    write_bytes_atomic(path, b"newer")
    assert _mode(path) == 0o600
