from pathlib import Path

from avatarcli.workdir import WorkDir, stage_key


def test_key_follows_file_content_not_name(tmp_path: Path):
    a = tmp_path / "a.jpg"
    a.write_bytes(b"one")
    k1 = stage_key(image=a, steps=10)
    assert stage_key(image=a, steps=10) == k1
    assert stage_key(image=a, steps=11) != k1
    a.write_bytes(b"two")
    assert stage_key(image=a, steps=10) != k1


def test_fresh_only_with_artifact_and_matching_sidecar(tmp_path: Path):
    wd = WorkDir(tmp_path)
    assert not wd.is_fresh("flame.npz", "k")
    wd.path("flame.npz").write_bytes(b"x")
    assert not wd.is_fresh("flame.npz", "k")  # no sidecar: a run killed before mark_done
    wd.mark_done("flame.npz", "k")
    assert wd.is_fresh("flame.npz", "k")
    assert not wd.is_fresh("flame.npz", "other")
    wd.path("flame.npz").unlink()
    assert not wd.is_fresh("flame.npz", "k")


def test_atomic_outputs_get_normal_permissions(tmp_path):
    """mkstemp makes 0600 files; a finished output has 0666 & ~umask like any other file."""
    import os

    from avatarcli.io.atomic import atomic_dir, atomic_path, atomic_write_bytes

    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        with atomic_path(tmp_path / "b.mp4") as p:
            p.write_bytes(b"y")
        with atomic_dir(tmp_path / "frames") as d:
            (d / "f0.png").write_bytes(b"z")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.mp4").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "frames").stat().st_mode & 0o777 == 0o755
