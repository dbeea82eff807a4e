"""`avatar doctor`: what is missing, the fix for each, and the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avatarcli.cli import main


@pytest.fixture(scope="module")
def flame_file(tmp_path_factory) -> Path:
    from avatarcli.testing.synthetic_flame import write_synthetic_flame

    return write_synthetic_flame(tmp_path_factory.mktemp("flame"), layout="deca")


@pytest.fixture
def all_models(tiny_models, fa_weights):
    """Every pinned model resolvable (tiny stand-ins through the real override mechanism)."""
    return fa_weights


def _doctor_json(capsys, *args) -> tuple[int, dict]:
    rc = main(["doctor", "--json", *args])
    return rc, json.loads(capsys.readouterr().out)


def test_bare_machine_lists_every_missing_piece_with_its_fix(capsys):
    rc, d = _doctor_json(capsys)
    assert rc == 3 and d["ok"] is False
    by = {c["name"]: c for c in d["checks"]}
    assert (
        by["flame"]["status"] == "missing" and "--flame" in by["flame"]["fix"] and "AVATAR_FLAME" in by["flame"]["fix"]
    )
    from avatarcli.weights import load_lock

    for name, entry in load_lock().items():
        c = by[f"model {name}"]
        if entry.kind == "pip":  # installed (or not) by pip, with the test extras: optional either way
            assert c["status"] in ("ok", "missing") and (c["status"] == "ok" or c["fix"] == entry.install)
            continue
        if entry.optional and entry.kind == "url":  # an optional download (e.g. LPIPS's VGG16)
            assert c["status"] == "missing" and not c["required"] and f"avatar weights fetch {name}" in c["fix"]
            continue
        if entry.kind == "manual":  # downloaded by hand, then converted; optional
            assert c["status"] == "missing" and not c["required"]
            assert c["fix"] == f"avatar weights convert {name} --from {entry.source_file}"
            continue
        assert c["status"] == "missing" and c["fix"].startswith(f"avatar weights fetch {name}")
        # and the option that makes it unnecessary (issue 13, item 1)
        assert ("--landmarks FILE" if name in ("fan-2d", "s3fd") else "--no-diffusion") in c["fix"], c["fix"]
    assert by["python"]["status"] == "ok" and by["disk"]["status"] in ("ok", "warning")
    import torch

    if not torch.cuda.is_available():
        assert by["gsplat"]["status"] == "skipped" and "no CUDA" in by["gsplat"]["detail"]


def test_table_output_names_the_fixes(capsys):
    rc = main(["doctor"])
    out = capsys.readouterr().out
    assert rc == 3
    assert "avatar weights fetch fan-2d" in out and "flame" in out and "problem(s)" in out


def test_ready_when_flame_and_every_model_are_there(flame_file, all_models, capsys):
    rc, d = _doctor_json(capsys, "--flame", str(flame_file))
    assert rc == 0, d
    by = {c["name"]: c for c in d["checks"]}
    assert by["flame"]["status"] == "ok" and "generic_model.pkl" in by["flame"]["detail"]
    assert "sha256" in by["flame"]["detail"] and "landmark_embedding" in by["flame"]["detail"]
    assert all(by[n]["status"] == "ok" for n in by if n.startswith("model ") and by[n]["required"])
    assert by["model panohead"]["status"] == "missing" and not by["model panohead"]["required"]  # optional prior
    assert "hashes not checked" in by["model fan-2d"]["detail"]
    rc = main(["doctor", "--flame", str(flame_file)])
    assert rc == 0 and "ready" in capsys.readouterr().out


def test_flame_from_the_environment_variable(flame_file, all_models, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_FLAME", str(flame_file.parent))
    rc, d = _doctor_json(capsys)
    assert rc == 0
    assert "AVATAR_FLAME" in {c["name"]: c for c in d["checks"]}["flame"]["detail"]


def test_verify_finds_a_bad_hash(flame_file, all_models, capsys):
    """The tiny FAN file does not match the published hash prefix: --verify says so."""
    rc, d = _doctor_json(capsys, "--flame", str(flame_file), "--verify")
    assert rc == 3
    c = {c["name"]: c for c in d["checks"]}["model fan-2d"]
    assert c["status"] == "problem" and "bad hash" in c["detail"] and "avatar weights fetch fan-2d" in c["fix"]


def test_a_bad_flame_file_is_a_problem(tmp_path, all_models, capsys):
    bad = tmp_path / "generic_model.pkl"
    bad.write_bytes(b"not a pickle")
    rc, d = _doctor_json(capsys, "--flame", str(bad))
    assert rc == 3
    c = {c["name"]: c for c in d["checks"]}["flame"]
    assert c["status"] == "problem" and "generic_model.pkl" in c["detail"]


def test_missing_weights_name_the_route_without_downloads(capsys):
    """doctor's fixes, `weights list` and a reconstruct that lacks models all name the options
    that need no downloaded weights (issue 13, item 1)."""
    assert main(["doctor"]) == 3
    out = capsys.readouterr().out
    assert "without downloaded weights" in out and "--landmarks" in out and "--no-diffusion" in out
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "--landmarks FILE" in out and "--no-diffusion" in out
