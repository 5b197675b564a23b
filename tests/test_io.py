"""Atomic writes leave either the old or the new file, with normal permissions."""

import os

import pytest

from activevlm.utils.io import atomic_path, atomic_write_json


def test_atomic_write_replaces_and_keeps_old_on_error(tmp_path):
    target = tmp_path / "a" / "state.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_atomic_write_uses_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "f.json"
        atomic_write_json(target, [])
        # mkstemp would give 0600; files other users read (shared pools) need 0644
        assert target.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
