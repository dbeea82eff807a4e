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
    fan = ReconstructConfig(detector="fan")
    assert needed_models([job], fan) == ["fan-2d", "s3fd", "sd-image-variations", "face-parsing"]
    assert needed_models([job], ReconstructConfig(no_diffusion=True, detector="fan")) == ["fan-2d", "s3fd"]
    assert needed_models([job], ReconstructConfig(no_diffusion=True, detector="dlib")) == ["dlib-68"]
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
    out = str(tmp_path / "head.ply")
    rc = main(["reconstruct", str(a), "-o", out, "--flame", str(flame_file), "--no-diffusion", "--detector", "fan"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "avatar weights fetch" in err and "fan-2d" in err
    assert "--landmarks FILE" in err, "names the route that needs no detector weights (issue 13, item 1)"
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


FAST = ["--no-diffusion", "--device", "cpu", "--steps", "4", "--n-gaussians", "1000", "--max-side", "64"]


@pytest.fixture(scope="module")
def warm(tmp_path_factory, photos, flame_file) -> dict:
    """One real run on alice (the only real FLAME fit of this file: it is the slow part on these
    CPUs); later tests start from copies of its work folder, whose keys are content hashes."""
    from avatarcli.reconstruct import run_batch

    root = tmp_path_factory.mktemp("warm")
    jobs = plan_batch([photos["alice"]], root / "out" / "alice.ply", landmarks=photos["landmarks"] / "alice.npz")
    cfg = ReconstructConfig(no_diffusion=True, device="cpu", steps=4, n_gaussians=1000, flame=flame_file, max_side=64)
    res = run_batch(jobs, cfg, workdir=root / "work")
    return {"result": res, "work": root / "work", "config": cfg}


def _workdir_for(tmp_path: Path, warm: dict, names=("alice",)) -> Path:
    """A copy of the warm work folder, alice's artifacts also under other names (same photo bytes)."""
    import shutil

    work = tmp_path / "work"
    for n in names:
        shutil.copytree(warm["work"] / "alice", work / n)
    return work


def _no_fit_stats(ply):
    """What a denoise stand-in reports: the head as it came, no figures."""
    from avatarcli.stages.denoise import DenoiseStats

    z = 0.0
    return DenoiseStats(z, z, z, z, ply.gaussians.n, z, z, z, None, None, (0, 0), "given", z, z, z)


def _counting_stages(monkeypatch, fake_fit=None, fake_denoise=False) -> dict:
    """Count how often each expensive stage really runs (fake_fit: return it instead of fitting;
    fake_denoise: return the init head as it is: these tests are about the orchestration, the
    real stages run in `warm` and the single-photo tests)."""
    import avatarcli.reconstruct.runner as den_mod  # where the runner looks denoise_head up
    import avatarcli.stages.fit_flame as fit_mod
    import avatarcli.stages.init_gaussians as init_mod

    calls = {"fit": 0, "init": 0, "denoise": 0}
    real_den = den_mod.denoise_head

    def den(ply, *a, **k):
        calls["denoise"] += 1
        return (ply, _no_fit_stats(ply)) if fake_denoise else real_den(ply, *a, **k)

    monkeypatch.setattr(den_mod, "denoise_head", den)
    real_fit, real_init = fit_mod.fit_flame, init_mod.init_with_details

    def fit(model, lms, *a, **k):
        calls["fit"] += 1
        return [fake_fit] * len(lms) if fake_fit is not None else real_fit(model, lms, *a, **k)

    def init(*a, **k):
        calls["init"] += 1
        return real_init(*a, **k)

    monkeypatch.setattr(fit_mod, "fit_flame", fit)
    monkeypatch.setattr(init_mod, "init_with_details", init)
    return calls


@pytest.mark.slow
def test_first_run_makes_every_artifact(warm):
    from avatarcli.gaussians.ply import read_gaussian_ply

    (r,) = warm["result"].jobs
    assert r.status == "done" and r.error is None and r.reused == []
    assert set(r.stage_times) == {"landmarks", "fit-flame", "head-region", "init-gaussians", "denoise"}
    assert r.fit_error_px is not None and r.fit_error_px < 3.0  # true landmarks of a FLAME head
    ply = read_gaussian_ply(r.output)
    assert ply.binding is not None and ply.meta is not None and ply.gaussians.n > 100
    assert ply.meta.image_size == (64, 64)
    for a in ("landmarks.npz", "flame.npz", "init.ply"):
        assert (warm["work"] / "alice" / a).is_file()
        assert (warm["work"] / "alice" / f"{a}.inputs.json").is_file()


@pytest.mark.slow
def test_batch_resume_settings_skip_existing_force_and_json(tmp_path, photos, flame_file, warm, capsys, monkeypatch):
    from avatarcli.flame.artifact import read_flame_fit

    imgs = tmp_path / "img"
    imgs.mkdir()
    lms = tmp_path / "lm"
    lms.mkdir()
    for n in ("alice", "bob"):  # bob: the same photo under another name
        (imgs / f"{n}.png").write_bytes(photos["alice"].read_bytes())
        (lms / f"{n}.npz").write_bytes((photos["landmarks"] / "alice.npz").read_bytes())
    work = _workdir_for(tmp_path, warm, ("alice", "bob"))
    calls = _counting_stages(monkeypatch, fake_fit=read_flame_fit(work / "alice" / "flame.npz"), fake_denoise=True)
    out = tmp_path / "heads"
    args = ["reconstruct", str(imgs), "-o", str(out), "--flame", str(flame_file),
            "--landmarks", str(lms), "--workdir", str(work), "--json", *FAST]  # fmt: skip

    # resume: the work folder's artifacts are reused, only denoise runs
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["format"] == "avatarcli.reconstruct_summary" and s["version"] == 1
    assert (s["done"], s["failed"], s["skipped"]) == (2, 0, 0)
    assert calls == {"fit": 0, "init": 0, "denoise": 2}
    for r in s["images"]:
        assert set(r) >= {"name", "image", "output", "status", "stage_times", "reused", "fit_error_px", "error"}
        assert r["status"] == "done" and r["error"] is None
        assert r["reused"] == ["fit-flame", "head-region", "init-gaussians"]
        assert r["stage_times"]["fit-flame"] == 0.0 and "denoise" in r["stage_times"]
        assert Path(r["output"]).is_file() and r["fit_error_px"] < 3.0

    # a changed photo redoes what depends on it, for that photo only; its landmarks.npz names the
    # old photo, so it is refused until re-made for the new one (same points, the new sha256)
    import dataclasses

    from PIL import Image as _I

    from avatarcli.io.hashing import sha256_file
    from avatarcli.landmarks.artifact import read_landmarks, write_landmarks

    im = np.asarray(_I.open(imgs / "bob.png")).copy()
    im[0, 0] = 255 - im[0, 0]
    _I.fromarray(im).save(imgs / "bob.png")
    lm_bob = read_landmarks(lms / "bob.npz")
    write_landmarks(lms / "bob.npz", dataclasses.replace(lm_bob, image_sha256=sha256_file(imgs / "bob.png")))
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert calls == {"fit": 1, "init": 1, "denoise": 4}
    assert {r["name"]: r["reused"] for r in s["images"]} == {
        "alice": ["fit-flame", "head-region", "init-gaussians"],
        "bob": [],
    }

    # a changed setting redoes the stages it feeds (n_gaussians -> init only, not the fit)
    assert main([a if a != "1000" else "900" for a in args]) == 0
    capsys.readouterr()
    assert calls == {"fit": 1, "init": 3, "denoise": 6}

    # --skip-existing: nothing to do, outputs untouched
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.ply")}
    assert main(args + ["--skip-existing"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in s["images"]] == ["skipped", "skipped"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.ply")} == before
    assert calls == {"fit": 1, "init": 3, "denoise": 6}

    # --force: every stage again
    assert main(args + ["--force"]) == 0
    capsys.readouterr()
    assert calls == {"fit": 3, "init": 5, "denoise": 8}
    assert sorted(p.name for p in out.iterdir()) == ["alice.ply", "bob.ply"]  # no temp files


@pytest.mark.slow
def test_batch_goes_on_when_one_photo_fails(tmp_path, photos, flame_file, warm, capsys):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "alice.png").write_bytes(photos["alice"].read_bytes())
    data = photos["bob"].read_bytes()
    (d / "bob.png").write_bytes(data[: len(data) // 3])  # truncated
    out = tmp_path / "heads"
    work = _workdir_for(tmp_path, warm)
    rc = main(["reconstruct", str(d), "-o", str(out), "--flame", str(flame_file), "--landmarks", str(photos["landmarks"]),
               "--workdir", str(work), "--json", *FAST])  # fmt: skip
    assert rc == 1
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    st = {r["name"]: r for r in s["images"]}
    assert st["alice"]["status"] == "done" and (out / "alice.ply").is_file()
    assert (
        st["bob"]["status"] == "failed" and "bob.png" in st["bob"]["error"] and st["bob"]["error_stage"] == "validate"
    )
    assert not (out / "bob.ply").exists()
    assert [p.name for p in out.iterdir()] == ["alice.ply"]  # no temp files left
    assert "Traceback" not in cap.err and "bob.png" in cap.err


@pytest.mark.slow
def test_stage_failure_inside_a_job_is_recorded(tmp_path, photos, flame_file, warm, monkeypatch):
    """An unexpected exception in one photo's stage: that photo fails, the next one finishes."""
    import avatarcli.stages.init_gaussians as init_mod
    from avatarcli.reconstruct import Job, run_batch

    _counting_stages(monkeypatch, fake_denoise=True)
    real = init_mod.init_with_details
    seen = []

    def flaky(*a, **k):
        seen.append(1)
        if len(seen) == 1:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(init_mod, "init_with_details", flaky)
    lm = photos["landmarks"] / "alice.npz"
    out = tmp_path / "out"
    jobs = [Job("carol", photos["alice"], out / "carol.ply", lm), Job("alice", photos["alice"], out / "alice.ply", lm)]
    work = _workdir_for(tmp_path, warm, ("alice", "carol"))
    for n in ("alice", "carol"):
        (work / n / "init.ply.inputs.json").unlink()  # make init run
    res = run_batch(jobs, warm["config"], workdir=work)
    a, b = res.jobs
    assert a.status == "failed" and a.error_stage == "init-gaussians" and "RuntimeError: boom" in a.error
    assert a.traceback is not None and "RuntimeError: boom" in a.traceback
    assert b.status == "done" and b.output.is_file()
    assert not a.output.exists()
    assert res.summary()["failed"] == 1


@pytest.mark.slow
def test_detector_path_with_the_tiny_detector(tmp_path, photos, flame_file, warm, tiny_face_alignment, monkeypatch):
    """No --landmarks: the (randomly initialised) detector runs through the real code path and its
    landmarks are stored in the work folder (the fit is stubbed: random landmarks fit nothing)."""
    import dataclasses

    from avatarcli.flame.artifact import read_flame_fit
    from avatarcli.landmarks.artifact import read_landmarks
    from avatarcli.reconstruct import run_batch
    from avatarcli.testing.synthetic_photo import make_synthetic_photo

    fit = read_flame_fit(warm["work"] / "alice" / "flame.npz")
    K = fit.K.copy()
    K[:2, :2] *= 2
    K[:2, 2] = (K[:2, 2] + 0.5) * 2 - 0.5
    fit = dataclasses.replace(fit, K=K, image_size=(128, 128))  # the 64 px fit, for a 128 px photo
    calls = _counting_stages(monkeypatch, fake_fit=fit, fake_denoise=True)
    big = tmp_path / "dave.png"  # the tiny detector's one face needs a 128 px photo
    Image.fromarray(make_synthetic_photo(size=128).rgb).save(big)
    jobs = plan_batch([big], tmp_path / "head.ply")
    cfg = dataclasses.replace(warm["config"], max_side=128)
    res = run_batch(jobs, cfg, workdir=tmp_path / "work")
    (r,) = res.jobs
    assert r.status == "done", r.error
    lm = read_landmarks(tmp_path / "work" / "dave" / "landmarks.npz")
    assert lm.image_size == (128, 128) and lm.detector  # original photo pixels
    assert calls["fit"] == 1 and calls["denoise"] == 1
    res = run_batch(jobs, cfg, workdir=tmp_path / "work")
    assert res.jobs[0].reused == ["landmarks", "fit-flame", "head-region", "init-gaussians"]


def test_single_photo_without_a_face_is_exit_2(tmp_path, photos, flame_file, tiny_face_alignment_noface, capsys):
    out = tmp_path / "head.ply"
    rc = main(["reconstruct", str(photos["alice"]), "-o", str(out), "--flame", str(flame_file), *FAST])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "alice.png")
    assert not out.exists()


@pytest.fixture
def tiny_face_alignment(fa_weights):
    """The session's tiny face-alignment weights (tests/fixtures/models.py), detector mode "one"."""
    return fa_weights


@pytest.fixture
def tiny_face_alignment_noface(fa_weights):
    fa_weights("none")
    return fa_weights


@pytest.mark.slow
def test_with_tiny_diffusion_models(tmp_path, photos, flame_file, warm, tiny_models, capsys):
    """Encode + one diffusion round with tiny models of the real classes."""
    out = tmp_path / "head.ply"
    work = _workdir_for(tmp_path, warm)
    rc = main(["reconstruct", str(photos["alice"]), "-o", str(out), "--flame", str(flame_file), "--landmarks",
               str(photos["landmarks"] / "alice.npz"), "--rounds", "1", "--device", "cpu", "--steps", "4",
               "--n-gaussians", "1000", "--max-side", "64", "--workdir", str(work), "--json"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    (r,) = json.loads(cap.out)["images"]
    assert "encode" in r["stage_times"] and (work / "alice" / "features.safetensors").is_file()
    # the fit does not depend on the diffusion settings; the head region now comes from face parsing
    assert r["reused"] == ["fit-flame"]

    assert out.is_file()


# ----------------------------------------------------------------------------- given landmarks (issue 13, items 2, 4)


def _as_formats(lm_npz: Path, folder: Path) -> dict[str, Path]:
    """The same 68 points as .txt, .csv, .npy and iBUG .pts (1-based) files."""
    from avatarcli.landmarks.artifact import read_landmarks

    p = read_landmarks(lm_npz).landmarks.astype(np.float64)  # [68, 2]
    folder.mkdir(parents=True, exist_ok=True)
    files = {s: folder / f"alice{s}" for s in (".txt", ".csv", ".npy", ".pts")}
    np.savetxt(files[".txt"], p)
    np.savetxt(files[".csv"], p, delimiter=",")
    np.save(files[".npy"], p)
    rows = "\n".join(f"{x + 1:.6f} {y + 1:.6f}" for x, y in p)
    files[".pts"].write_text(f"version: 1\nn_points: 68\n{{\n{rows}\n}}\n")
    return files


def test_reconstruct_takes_every_landmarks_format(tmp_path, photos, flame_file, warm, monkeypatch, capsys):
    """--landmarks takes what `avatar landmarks --landmarks` takes (.txt .csv .npy .pts), a file
    or a folder of NAME.<ext>; the points reach the fit unchanged (original photo pixels)."""
    from avatarcli.flame.fit import read_flame_fit
    from avatarcli.landmarks.artifact import read_landmarks

    truth = read_landmarks(photos["landmarks"] / "alice.npz").landmarks
    files = _as_formats(photos["landmarks"] / "alice.npz", tmp_path / "lm")
    for f in files.values():
        (job,) = plan_batch([photos["alice"]], tmp_path / "h.ply", landmarks=f)
        assert validate_inputs([job]) == {}, f
    folder = tmp_path / "only_txt"
    folder.mkdir()
    (folder / "alice.txt").write_bytes(files[".txt"].read_bytes())
    (job,) = plan_batch([photos["alice"]], tmp_path / "out/", landmarks=folder)
    assert job.landmarks == folder / "alice.txt"
    # a CLI run on the .pts file: the fit stage gets the same points as from the npz
    _counting_stages(monkeypatch, fake_fit=read_flame_fit(warm["work"] / "alice" / "flame.npz"), fake_denoise=True)
    work = tmp_path / "work"
    args = ["reconstruct", str(photos["alice"]), "-o", str(tmp_path / "a.ply"), "--flame", str(flame_file),
            "-l", str(files[".pts"]), "--workdir", str(work), *FAST]  # fmt: skip
    assert main(args) == 0
    # not a terminal (captured): still one line for the photo (issue 13, item 3)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if " -> " in ln]
    assert len(lines) == 1 and "alice.png -> " in lines[0] and "a.ply (fit " in lines[0], lines
    got = read_landmarks(work / "alice" / "landmarks.npz").landmarks
    np.testing.assert_allclose(got, truth, atol=1e-4)


def test_landmarks_of_another_photo_are_refused_unless_force(tmp_path, photos, flame_file, capsys):
    """A landmarks.npz records its photo's sha256: bob's photo with alice's landmarks is exit 2 in
    one line, before any model loads (no FLAME needed to see it); --force uses them (warned)."""
    alice_lm = photos["landmarks"] / "alice.npz"
    (job,) = plan_batch([photos["bob"]], tmp_path / "h.ply", landmarks=alice_lm)
    errors = validate_inputs([job])
    assert "another photo" in str(errors["bob"]) and "`force`" in str(errors["bob"])  # the CLI: --force
    assert validate_inputs([job], force=True) == {}
    assert "used anyway (`force`)" in capsys.readouterr().err
    rc = main(["reconstruct", str(photos["bob"]), "-o", str(tmp_path / "h.ply"), "--landmarks", str(alice_lm)])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "alice.npz")
    assert not (tmp_path / "h.ply").exists()
    from avatarcli.io.images import load_image
    from avatarcli.landmarks.points import given_landmarks

    lm = given_landmarks(alice_lm, load_image(photos["bob"]), force=True)
    assert "another photo" in capsys.readouterr().err
    assert lm.landmarks.shape == (68, 2)


def test_batch_failures_show_flags_in_lines_and_json(tmp_path, photos, capsys):
    """A batch whose photos both have the other's landmarks: each failure line and the --json
    summary read as the CLI's (--force), while the library's JobResult names the setting."""
    import json
    import shutil

    swapped = tmp_path / "lm"
    swapped.mkdir()
    shutil.copy(photos["landmarks"] / "alice.npz", swapped / "bob.npz")
    shutil.copy(photos["landmarks"] / "bob.npz", swapped / "alice.npz")
    args = ["reconstruct", str(photos["alice"]), str(photos["bob"]), "-o", str(tmp_path / "out"), "--landmarks",
            str(swapped), "--json"]  # fmt: skip
    assert main(args) == 1
    captured = capsys.readouterr()
    failed = [ln for ln in captured.err.splitlines() if ln.startswith("failed:")]
    assert len(failed) == 2 and all("another photo" in ln and "pass --force" in ln for ln in failed), captured.err
    errors = [j["error"] for j in json.loads(captured.out)["images"]]
    assert all("pass --force" in e and "`force`" not in e for e in errors), errors
    errs = validate_inputs(plan_batch([photos["alice"]], tmp_path / "h.ply", landmarks=swapped / "alice.npz"))
    assert "pass `force`" in str(errs["alice"])


# ----------------------------------------------------------------------------- the GAN prior (issue 12)


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory) -> Path:
    """The tiny random generator in the converted format (what `avatar weights convert` writes)."""
    import dataclasses

    import torch

    from avatarcli.gan.convert import save_generator
    from avatarcli.gan.generator import GanConfig, TriplaneGenerator

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gan") / "tiny.safetensors"
    save_generator(TriplaneGenerator(dataclasses.replace(GanConfig.tiny(), density_shift=2.0)), path)
    return path


GAN = ["--prior", "gan", "--rounds", "1", "--gan-w-steps", "2", "--gan-pti-steps", "2", "--device", "cpu",
       "--steps", "4", "--n-gaussians", "1000", "--max-side", "64"]  # fmt: skip


def _spy_gan(monkeypatch) -> dict:
    """Counts, through the real code: generator loads, inversions (with a digest of the generator
    each one starts from) and the GAN prior's denoise calls in the rounds."""
    import avatarcli.reconstruct.models as models_mod
    import avatarcli.reconstruct.runner as runner_mod

    seen: dict = {"loads": 0, "starts": [], "denoise": 0}
    real_load, real_invert, real_prior = models_mod.load_generator, runner_mod.invert_photo, runner_mod.GanPrior

    def load(*a, **k):
        seen["loads"] += 1
        return real_load(*a, **k)

    def invert(G, *a, **k):
        seen["starts"].append(sum(float(p.double().sum()) for p in G.state_dict().values()))
        return real_invert(G, *a, **k)

    class Prior(real_prior):  # type: ignore[misc, valid-type]
        def denoise(self, *a, **k):
            seen["denoise"] += 1
            return super().denoise(*a, **k)

    monkeypatch.setattr(models_mod, "load_generator", load)
    monkeypatch.setattr(runner_mod, "invert_photo", invert)
    monkeypatch.setattr(runner_mod, "GanPrior", Prior)
    return seen


@pytest.mark.slow
def test_prior_gan_runs_invert_gan_as_a_cached_stage(tmp_path, photos, flame_file, warm, tiny_gan, monkeypatch, capsys):
    """--prior gan: invert-gan runs between head-region and init-gaussians, its inversion is kept
    in the work folder and reused, the rounds fit the GAN's renders; no encode, no diffusion model."""
    from avatarcli.gan.invert import read_inversion_artifact

    monkeypatch.setenv("AVATAR_WEIGHTS_LPIPS_VGG", str(tmp_path / "no-lpips.pth"))  # L2 only, warned once
    seen = _spy_gan(monkeypatch)
    out, work = tmp_path / "head.ply", _workdir_for(tmp_path, warm)
    args = ["reconstruct", str(photos["alice"]), "-o", str(out), "--flame", str(flame_file), "--landmarks",
            str(photos["landmarks"] / "alice.npz"), "--workdir", str(work), "--gan-weights", str(tiny_gan), "--json"]  # fmt: skip
    assert main([*args, *GAN]) == 0
    cap = capsys.readouterr()
    (r,) = json.loads(cap.out)["images"]
    assert r["status"] == "done" and out.is_file()
    assert list(r["stage_times"]) == [
        "landmarks",
        "fit-flame",
        "head-region",
        "invert-gan",
        "init-gaussians",
        "denoise",
    ]
    assert r["reused"] == ["fit-flame", "head-region", "init-gaussians"] and r["gan_loss"] > 0
    assert sum("L2 only" in line for line in cap.err.splitlines()) == 1 and "Traceback" not in cap.err
    inv = read_inversion_artifact(work / "alice" / "gan_inversion.safetensors")
    assert inv.frame is not None and inv.frame.image_size == (64, 64) and len(inv.pti_losses) == 1
    assert seen["loads"] == 1 and len(seen["starts"]) == 1 and seen["denoise"] == 1  # one round

    calls = _counting_stages(monkeypatch, fake_denoise=True)  # the re-runs are about the cache only
    assert main([*args, *GAN]) == 0  # unchanged inputs: the inversion is reused
    (r,) = json.loads(capsys.readouterr().out)["images"]
    assert "invert-gan" in r["reused"] and len(seen["starts"]) == 1 and calls["denoise"] == 1
    assert main([*args, *GAN, "--gan-pti-steps", "3"]) == 0  # another setting: inverted again
    (r,) = json.loads(capsys.readouterr().out)["images"]
    assert "invert-gan" not in r["reused"] and len(seen["starts"]) == 2


@pytest.mark.slow
def test_prior_gan_batch_loads_once_and_a_bad_photo_fails_alone(
    tmp_path, photos, flame_file, warm, tiny_gan, monkeypatch, capsys
):
    d = tmp_path / "mixed"
    d.mkdir()
    for n in ("alice", "carol"):  # the same photo twice: both reuse the warm fit
        (d / f"{n}.png").write_bytes(photos["alice"].read_bytes())
    (d / "bob.png").write_bytes(photos["bob"].read_bytes()[:200])  # truncated
    lm = tmp_path / "lm"
    lm.mkdir()
    for n in ("alice", "carol"):
        (lm / f"{n}.npz").write_bytes((photos["landmarks"] / "alice.npz").read_bytes())
    seen = _spy_gan(monkeypatch)
    _counting_stages(monkeypatch, fake_denoise=True)  # the real rounds with the GAN run in the test above
    out, work = tmp_path / "heads", _workdir_for(tmp_path, warm, ("alice", "carol"))
    rc = main(["reconstruct", str(d), "-o", str(out), "--flame", str(flame_file), "--landmarks", str(lm),
               "--workdir", str(work), "--gan-weights", str(tiny_gan), *GAN])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "bob.png" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["alice.ply", "carol.ply"]  # nothing half-written for bob
    assert seen["loads"] == 1 and len(seen["starts"]) == 2
    assert seen["starts"][0] == seen["starts"][1]  # each photo starts from the untouched generator (PTI tunes a copy)
    assert not (work / "bob").exists() or not (work / "bob" / "gan_inversion.safetensors").exists()


def test_prior_gan_without_weights_is_exit_3_naming_the_convert(tmp_path, flame_file, capsys, monkeypatch):
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("AVATAR_WEIGHTS_PANOHEAD", raising=False)
    a = _png(tmp_path / "a.png")
    lm = tmp_path / "a.txt"
    np.savetxt(lm, np.random.default_rng(0).uniform(10, 50, (68, 2)))
    out = tmp_path / "head.ply"
    base = ["reconstruct", str(a), "-o", str(out), "--flame", str(flame_file), "--landmarks", str(lm)]
    assert main([*base, "--prior", "gan"]) == 3
    _one_error_line(capsys.readouterr().err, "avatar weights convert panohead --from")
    assert main([*base, "--prior", "gan+diffusion"]) == 3  # several missing: one line, each with its command
    err = capsys.readouterr().err
    _one_error_line(err, "avatar weights convert panohead --from")
    assert "avatar weights fetch sd-image-variations face-parsing" in err
    assert not out.exists()


def test_prior_flags_are_checked_before_any_work(tmp_path, flame_file, capsys):
    a = _png(tmp_path / "a.png")
    base = ["reconstruct", str(a), "-o", str(tmp_path / "head.ply"), "--flame", str(flame_file)]
    assert main([*base, "--prior", "nerf"]) == 2
    _one_error_line(capsys.readouterr().err, "--prior 'nerf': expected one of diffusion, gan, gan+diffusion")
    assert main([*base, "--prior", "gan", "--no-diffusion"]) == 2
    _one_error_line(capsys.readouterr().err, "--no-diffusion fits the input view only")
    assert main([*base, "--prior", "gan", "--gan-weights", str(tmp_path / "none.safetensors")]) == 2
    _one_error_line(capsys.readouterr().err, "none.safetensors: file not found")
    assert not (tmp_path / "head.ply").exists()


def test_prior_settings_choose_stages_models_and_the_denoiser(tmp_path, monkeypatch):
    """Which stages and weights each --prior needs, and that gan+diffusion chains the GAN before
    the diffusion denoiser (the denoise stage is stubbed: this checks the wiring only)."""
    import types

    import avatarcli.reconstruct.runner as runner_mod
    from avatarcli.gan.prior import PriorChain

    a = _png(tmp_path / "a.jpg")
    (job,) = plan_batch([a], tmp_path / "h.ply")
    job.landmarks = tmp_path / "a.npz"
    gan, both = ReconstructConfig(prior="gan"), ReconstructConfig(prior="gan+diffusion")
    assert needed_models([job], gan) == ["panohead"]
    assert needed_models([job], both) == ["sd-image-variations", "face-parsing", "panohead"]
    assert needed_models([job], ReconstructConfig(prior="gan", gan_weights=a)) == []
    assert needed_models([job], ReconstructConfig(prior="gan", rounds=0)) == []  # no rounds: no prior to invert
    assert "encode" not in runner_mod.stages_of(gan) and "invert-gan" in runner_mod.stages_of(gan)
    assert {"encode", "invert-gan"} <= set(runner_mod.stages_of(both))
    assert "invert-gan" not in runner_mod.stages_of(ReconstructConfig())

    got = {}
    monkeypatch.setattr(runner_mod, "GanPrior", lambda inv, device: ("gan", inv))
    monkeypatch.setattr(runner_mod, "write_gaussian_ply", lambda *a: None)

    def den(ply, *a, denoiser=None, **k):
        got["denoiser"] = denoiser
        raise _Stop

    monkeypatch.setattr(runner_mod, "denoise_head", den)
    models = runner_mod.Models(device="cpu", flame=None, denoiser="diffusion")  # type: ignore[arg-type]
    runner = runner_mod._JobRunner(0, job, both, models, None, False, lambda ev: None)
    with pytest.raises(_Stop):
        runner.denoise(types.SimpleNamespace(rgb=None), None, None, None, inversion="inv")
    assert isinstance(got["denoiser"], PriorChain) and got["denoiser"].denoisers == (("gan", "inv"), "diffusion")


class _Stop(Exception):
    pass
