"""atomic_write: complete or untouched, never half-written, no temporary files left behind; what it wrote is reported."""

import os
import stat

import pytest

from models.io import atomic_write, moved, recording_writes


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


def test_files_of_a_staged_folder_are_reported_where_they_end_up(tmp_path):
    staging, out = tmp_path / ".out.partial", tmp_path / "out"
    with recording_writes() as written:
        atomic_write(staging / "images" / "a.dicom", lambda s: s.write(b"x"))
        atomic_write(tmp_path / "elsewhere.txt", lambda s: s.write(b"y"))
        staging.rename(out)
        moved(staging, out)
    assert written == [out / "images" / "a.dicom", tmp_path / "elsewhere.txt"]
    assert all(path.is_file() for path in written)
