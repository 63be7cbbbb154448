"""atomic_write: complete or untouched, never half-written, no temporary files left behind."""

import os
import stat

import pytest

from models.io import atomic_write


def test_writes_and_creates_parent(tmp_path):
    target = atomic_write(tmp_path / "a" / "b.bin", lambda s: s.write(b"new"))
    assert target.read_bytes() == b"new"


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "b.bin"
    target.write_bytes(b"old")

    def crash(stream):
        stream.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    path = atomic_write(tmp_path / "table.csv", lambda s: s.write(b"a,b\n"))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
