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
