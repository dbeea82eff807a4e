"""`avatar reconstruct`: planning, up-front validation, exit codes, end-to-end runs on the CPU,
work-folder resume, --skip-existing and the --json summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatarcli.cli import main
from avatarcli.errors import InputError
from avatarcli.reconstruct import (
    ReconstructConfig,
    check_writable_folder,
    needed_models,
    plan_batch,
    validate_inputs,
)


def _png(path: Path, size=(64, 64), color=(120, 100, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _one_error_line(err: str, name: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert name in lines[0], err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- planning


def test_plan_single_photo_to_file_or_folder(tmp_path):
    a = _png(tmp_path / "a.jpg")
    (job,) = plan_batch([a], tmp_path / "head.ply")
    assert job.output == tmp_path / "head.ply" and job.name == "a" and job.landmarks is None
    (job,) = plan_batch([a], str(tmp_path / "out") + "/")
    assert job.output == tmp_path / "out" / "a.ply"
    (job,) = plan_batch([a], tmp_path / "out2")  # no suffix: a folder
    assert job.output == tmp_path / "out2" / "a.ply"
    with pytest.raises(InputError, match="should be a .ply"):
        plan_batch([a], tmp_path / "head.png")


def test_plan_folder_sorted_non_images_skipped_with_a_note(tmp_path):
    d = tmp_path / "photos"
    for n in ["c.PNG", "a.jpg", "b.webp", "d.jpeg"]:
        _png(d / n)
    (d / "notes.txt").write_text("x")
    (d / "sub").mkdir()
    (d / ".hidden.jpg").write_bytes(b"")
    notes: list[str] = []
    jobs = plan_batch([d], tmp_path / "heads", notes=notes)
    assert [j.name for j in jobs] == ["a", "b", "c", "d"]
    assert [j.output for j in jobs] == [tmp_path / "heads" / f"{n}.ply" for n in "abcd"]
    assert len(notes) == 1 and "notes.txt" in notes[0] and "sub" in notes[0] and "2 non-image" in notes[0]


def test_plan_refuses_duplicates_ply_for_many_and_empty_folders(tmp_path):
    a = _png(tmp_path / "x" / "face.jpg")
    b = _png(tmp_path / "y" / "face.png")
    with pytest.raises(InputError, match="face"):
        plan_batch([a, b], tmp_path / "out")
    c = _png(tmp_path / "z" / "other.png")
    with pytest.raises(InputError, match="output folder"):
        plan_batch([a, c], tmp_path / "heads.ply")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        plan_batch([a, c], tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no photos"):
        plan_batch([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(InputError, match="not found"):
        plan_batch([tmp_path / "nope.jpg"], tmp_path / "out.ply")


def test_plan_landmarks_file_or_folder(tmp_path):
    a = _png(tmp_path / "p" / "a.jpg")
    b = _png(tmp_path / "p" / "b.jpg")
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "a.npz").write_bytes(b"x")
    jobs = plan_batch([tmp_path / "p"], tmp_path / "out", landmarks=lm)
    assert [j.landmarks for j in jobs] == [lm / "a.npz", lm / "b.npz"]
    (job,) = plan_batch([a], tmp_path / "h.ply", landmarks=lm / "a.npz")
    assert job.landmarks == lm / "a.npz"
    with pytest.raises(InputError, match="several photos"):
        plan_batch([a, b], tmp_path / "out", landmarks=lm / "a.npz")


def test_needed_models_follow_the_options(tmp_path):
    a = _png(tmp_path / "a.jpg")
    (job,) = plan_batch([a], tmp_path / "h.ply")
    assert needed_models([job], ReconstructConfig()) == ["fan-2d", "s3fd", "sd-image-variations", "face-parsing"]
    assert needed_models([job], ReconstructConfig(no_diffusion=True)) == ["fan-2d", "s3fd"]
    job.landmarks = tmp_path / "a.npz"
    assert needed_models([job], ReconstructConfig(no_diffusion=True)) == []
    assert needed_models([job], ReconstructConfig(rounds=0)) == ["sd-image-variations", "face-parsing"]


# ----------------------------------------------------------------------------- validation


def test_validate_reports_each_bad_photo(tmp_path):
    good = _png(tmp_path / "good.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    tiny = _png(tmp_path / "tiny.png", size=(1, 1))
    data = (tmp_path / "good.png").read_bytes()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(data[: len(data) // 2])
    jobs = plan_batch([good, empty, tiny, trunc], tmp_path / "out")
    errors = validate_inputs(jobs)
    assert set(errors) == {"empty", "tiny", "trunc"}
    for name, e in errors.items():
        assert name in str(e)


def test_validate_landmarks_must_match_the_photo(tmp_path):
    from avatarcli.landmarks.artifact import Landmarks, write_landmarks

    a = _png(tmp_path / "a.png", size=(64, 48))
    lm = Landmarks((100, 100), np.full((68, 2), 30.0), np.ones(68), np.array([10, 10, 60, 60.0]), "x", "test")
    write_landmarks(tmp_path / "a.npz", lm)
    (job,) = plan_batch([a], tmp_path / "h.ply", landmarks=tmp_path / "a.npz")
    errors = validate_inputs([job])
    assert "100x100" in str(errors["a"]) and "a.npz" in str(errors["a"])


def test_check_writable_folder(tmp_path):
    check_writable_folder(tmp_path / "new" / "deeper")  # creatable: fine, nothing created
    assert not (tmp_path / "new").exists()
    from avatarcli.errors import EnvironmentProblem

    with pytest.raises(EnvironmentProblem, match="not writable"):
        check_writable_folder(Path("/proc/avatarcli-test-out"))


# ----------------------------------------------------------------------------- exit codes (no model needed)


def test_single_bad_photo_fails_before_any_model(tmp_path, capsys):
    bad = tmp_path / "text.jpg"
    bad.write_text("not an image at all")
    # no FLAME anywhere: were models loaded first, this would be exit 3
    rc = main(["reconstruct", str(bad), "-o", str(tmp_path / "head.ply")])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "text.jpg")
    assert not (tmp_path / "head.ply").exists()


def test_missing_flame_is_exit_3(tmp_path, capsys):
    a = _png(tmp_path / "a.png")
    rc = main(["reconstruct", str(a), "-o", str(tmp_path / "head.ply"), "--no-diffusion"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "FLAME" in err and "Traceback" not in err
    assert not (tmp_path / "head.ply").exists()


def test_cuda_without_cuda_is_exit_3(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    a = _png(tmp_path / "a.png")
    rc = main(["reconstruct", str(a), "-o", str(tmp_path / "head.ply"), "--device", "cuda"])
    assert rc == 3
    assert "CUDA" in capsys.readouterr().err


def test_unwritable_output_is_found_before_work(tmp_path, capsys):
    a = _png(tmp_path / "a.png")
    rc = main(["reconstruct", str(a), "-o", "/proc/avatarcli-test-out/head.ply"])
    assert rc == 3
    _one_error_line(capsys.readouterr().err, "/proc/avatarcli-test-out")


def test_all_photos_bad_in_a_batch_is_exit_1_with_json(tmp_path, capsys):
    d = tmp_path / "p"
    (d).mkdir()
    (d / "a.jpg").write_bytes(b"")
    (d / "b.png").write_text("hello")
    rc = main(["reconstruct", str(d), "-o", str(tmp_path / "out"), "--json"])
    assert rc == 1
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    assert s["failed"] == 2 and s["done"] == 0
    assert {r["name"]: r["status"] for r in s["images"]} == {"a": "failed", "b": "failed"}
    assert all(r["error_stage"] == "validate" and r["name"] in r["error"] for r in s["images"])
    assert "Traceback" not in cap.err
    assert not list((tmp_path / "out").glob("*.ply")) if (tmp_path / "out").exists() else True


def test_missing_weights_is_exit_3_naming_the_fetch(tmp_path, capsys, flame_file):
    a = _png(tmp_path / "a.png")
    rc = main(["reconstruct", str(a), "-o", str(tmp_path / "head.ply"), "--flame", str(flame_file), "--no-diffusion"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "avatar weights fetch" in err and "fan-2d" in err
    assert not (tmp_path / "head.ply").exists()


# ----------------------------------------------------------------------------- end to end (CPU)


@pytest.fixture(scope="module")
def flame_file(tmp_path_factory) -> Path:
    from avatarcli.testing.synthetic_flame import write_synthetic_flame

    return write_synthetic_flame(tmp_path_factory.mktemp("flame"), layout="deca")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, flame_file) -> dict:
    """Two small synthetic photos of the synthetic FLAME head, with their true landmarks."""
    from avatarcli.landmarks.artifact import Landmarks, write_landmarks
    from avatarcli.testing.synthetic_photo import make_synthetic_photo

    root = tmp_path_factory.mktemp("photos")
    (root / "img").mkdir()
    (root / "lm").mkdir()
    out = {}
    for name, yaw, seed in (("alice", 10.0, 0), ("bob", -8.0, 1)):
        p = make_synthetic_photo(size=64, yaw_deg=yaw, seed=seed)
        img = root / "img" / f"{name}.png"
        Image.fromarray(p.rgb).save(img)
        x0, y0 = p.landmarks.min(0)
        x1, y1 = p.landmarks.max(0)
        from avatarcli.io.hashing import sha256_file

        lm = Landmarks(p.size, p.landmarks, np.ones(68), np.array([x0, y0, x1, y1]), sha256_file(img), "truth")
        write_landmarks(root / "lm" / f"{name}.npz", lm)
        out[name] = img
    return {"root": root, "images": root / "img", "landmarks": root / "lm", **out}


FAST = ["--no-diffusion", "--device", "cpu", "--steps", "8", "--n-gaussians", "1500", "--max-side", "64"]


def _counting_stages(monkeypatch) -> dict:
    """Count how often each expensive stage really runs."""
    import avatarcli.flame.fit as fit_mod
    import avatarcli.gaussians.init as init_mod

    calls = {"fit": 0, "init": 0}
    real_fit, real_init = fit_mod.fit_flame, init_mod.init_gaussians

    def fit(*a, **k):
        calls["fit"] += 1
        return real_fit(*a, **k)

    def init(*a, **k):
        calls["init"] += 1
        return real_init(*a, **k)

    monkeypatch.setattr(fit_mod, "fit_flame", fit)
    monkeypatch.setattr(init_mod, "init_gaussians", init)
    return calls


def test_end_to_end_batch_resume_skip_existing_and_json(tmp_path, photos, flame_file, capsys, monkeypatch):
    from avatarcli.gaussians.ply import read_gaussian_ply

    calls = _counting_stages(monkeypatch)
    out, work = tmp_path / "heads", tmp_path / "work"
    args = ["reconstruct", str(photos["images"]), "-o", str(out), "--flame", str(flame_file),
            "--landmarks", str(photos["landmarks"]), "--workdir", str(work), "--json", *FAST]  # fmt: skip
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["done"] == 2 and s["failed"] == 0 and s["skipped"] == 0
    for r in s["images"]:
        assert r["status"] == "done" and r["error"] is None and r["reused"] == []
        assert set(r["stage_times"]) == {"landmarks", "fit-flame", "init-gaussians", "denoise"}
        assert r["fit_error_px"] is not None and r["fit_error_px"] < 3.0  # true landmarks of a FLAME head
        ply = read_gaussian_ply(r["output"])
        assert ply.binding is not None and ply.meta is not None and ply.gaussians.n > 100
        for a in ("landmarks.npz", "flame.npz", "init.ply"):
            assert (work / r["name"] / a).is_file()
    assert calls == {"fit": 2, "init": 2}

    # resume: the work folder's artifacts are reused, only denoise runs again
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert calls == {"fit": 2, "init": 2}
    for r in s["images"]:
        assert r["reused"] == ["fit-flame", "init-gaussians"]
        assert r["stage_times"]["fit-flame"] == 0.0

    # a changed setting redoes the stages it feeds (n_gaussians -> init only)
    args2 = [a if a != "1500" else "1200" for a in args]
    assert main(args2) == 0
    capsys.readouterr()
    assert calls == {"fit": 2, "init": 4}

    # --skip-existing: nothing to do
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.ply")}
    assert main(args + ["--skip-existing"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in s["images"]] == ["skipped", "skipped"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.ply")} == before

    # --force: everything again
    assert main(args + ["--force"]) == 0
    capsys.readouterr()
    assert calls == {"fit": 4, "init": 6}


def test_batch_goes_on_when_one_photo_fails(tmp_path, photos, flame_file, capsys):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "alice.png").write_bytes(photos["alice"].read_bytes())
    data = photos["bob"].read_bytes()
    (d / "bob.png").write_bytes(data[: len(data) // 3])  # truncated
    out = tmp_path / "heads"
    rc = main(["reconstruct", str(d), "-o", str(out), "--flame", str(flame_file), "--landmarks", str(photos["landmarks"]), "--json", *FAST])
    assert rc == 1
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    st = {r["name"]: r for r in s["images"]}
    assert st["alice"]["status"] == "done" and (out / "alice.ply").is_file()
    assert st["bob"]["status"] == "failed" and "bob.png" in st["bob"]["error"]
    assert not (out / "bob.ply").exists()
    assert [p.name for p in out.iterdir()] == ["alice.ply"]  # no temp files left
    assert "Traceback" not in cap.err and "bob.png" in cap.err


def test_stage_failure_inside_a_job_is_recorded(tmp_path, photos, flame_file, monkeypatch):
    """An unexpected exception in one photo's stage: that photo fails, the next one finishes."""
    import avatarcli.gaussians.init as init_mod
    from avatarcli.reconstruct import run_batch

    real = init_mod.init_gaussians
    seen = []

    def flaky(model, fit, rgb, cfg):
        seen.append(1)
        if len(seen) == 1:
            raise RuntimeError("boom")
        return real(model, fit, rgb, cfg)

    monkeypatch.setattr(init_mod, "init_gaussians", flaky)
    jobs = plan_batch([photos["images"]], tmp_path / "out", landmarks=photos["landmarks"])
    cfg = ReconstructConfig(no_diffusion=True, device="cpu", steps=5, n_gaussians=800, flame=flame_file, max_side=64)
    res = run_batch(jobs, cfg)
    a, b = res.jobs
    assert a.status == "failed" and a.error_stage == "init-gaussians" and "RuntimeError: boom" in a.error
    assert b.status == "done" and b.output.is_file()
    assert not a.output.exists()


def test_single_photo_with_the_tiny_detector(tmp_path, photos, flame_file, tiny_face_alignment, capsys):
    """No --landmarks: the (randomly initialised) detector runs through the real code path."""
    out = tmp_path / "head.ply"
    rc = main(["reconstruct", str(photos["alice"]), "-o", str(out), "--flame", str(flame_file), *FAST])
    assert rc == 0, capsys.readouterr().err
    assert out.is_file()


def test_single_photo_without_a_face_is_exit_2(tmp_path, photos, flame_file, tiny_face_alignment_noface, capsys):
    out = tmp_path / "head.ply"
    rc = main(["reconstruct", str(photos["alice"]), "-o", str(out), "--flame", str(flame_file), *FAST])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "alice.png")
    assert not out.exists()


@pytest.fixture
def tiny_face_alignment(tmp_path_factory, monkeypatch):
    from avatarcli.testing.tiny_face_alignment import env, write_tiny_face_alignment

    files = write_tiny_face_alignment(tmp_path_factory.mktemp("fa-one"), sfd="one")
    for k, v in env(files).items():
        monkeypatch.setenv(k, v)
    return files


@pytest.fixture
def tiny_face_alignment_noface(tmp_path_factory, monkeypatch):
    from avatarcli.testing.tiny_face_alignment import env, write_tiny_face_alignment

    files = write_tiny_face_alignment(tmp_path_factory.mktemp("fa-none"), sfd="none")
    for k, v in env(files).items():
        monkeypatch.setenv(k, v)
    return files


def test_with_tiny_diffusion_models(tmp_path, photos, flame_file, tiny_models, capsys):
    """Encode + one diffusion round with tiny models of the real classes."""
    out = tmp_path / "head.ply"
    work = tmp_path / "work"
    rc = main(["reconstruct", str(photos["alice"]), "-o", str(out), "--flame", str(flame_file), "--landmarks",
               str(photos["landmarks"] / "alice.npz"), "--rounds", "1", "--device", "cpu", "--steps", "5",
               "--n-gaussians", "800", "--max-side", "64", "--workdir", str(work), "--json"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    (r,) = json.loads(cap.out)["images"]
    assert "encode" in r["stage_times"] and (work / "alice" / "features.safetensors").is_file()
    assert out.is_file()
