"""weights.lock, the resolver (override -> cache), fetch (no network: hub/url functions faked) and the CLI."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from pathlib import Path

import pytest

from avatarcli.cli import main
from avatarcli.errors import EnvironmentProblem, InputError, MissingModelError
from avatarcli.weights import (
    cache_folder,
    env_var_for,
    fetch,
    flame_info,
    get_entry,
    load_lock,
    resolve,
    resolve_file,
    status,
    verify,
)

REV = "0123456789abcdef0123456789abcdef01234567"
FILES = {"config.json": b'{"hidden": 8}', "sub/weights.bin": b"\x00\x01weights" * 100, "notes.txt": b"no hash pinned"}
URL_DATA = b"url-model-bytes" * 1000
URL_SHA = hashlib.sha256(URL_DATA).hexdigest()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _write_lock(path: Path, *, hf_sha: dict | None = None, url_prefix: str | None = None) -> Path:
    hf_sha = hf_sha if hf_sha is not None else {k: _sha(v) for k, v in FILES.items() if k != "notes.txt"}
    files = ",\n".join(
        f'  {{ path = "{k}"' + (f', sha256 = "{hf_sha[k]}"' if k in hf_sha else "") + " }" for k in FILES
    )
    prefix = url_prefix or URL_SHA[:10]
    path.write_text(
        f"""lock_version = 1

[models.tiny-hf]
kind = "hf"
repo = "someone/tiny"
revision = "{REV}"
licence = "MIT"
homepage = "https://example.invalid/tiny"
files = [
{files}
]

[models.tiny-url]
kind = "url"
url = "https://example.invalid/dl/model-{prefix}.pth"
file = "model-{prefix}.pth"
sha256_prefix = "{prefix}"
revision = "{prefix}"
licence = "BSD-3-Clause"
homepage = "https://example.invalid/url"
"""
    )
    return path


@pytest.fixture
def lock(tmp_path, monkeypatch):
    p = _write_lock(tmp_path / "test.lock")
    monkeypatch.setenv("AVATAR_WEIGHTS_LOCK", str(p))
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))  # this test's own cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("AVATAR_OFFLINE", raising=False)
    return p


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local stand-in for the hub: huggingface_hub.snapshot_download copies from it (no network)."""
    src = tmp_path / "hub"
    for k, v in FILES.items():
        (src / k).parent.mkdir(parents=True, exist_ok=True)
        (src / k).write_bytes(v)
    calls = []

    def fake_snapshot_download(repo_id, *, revision=None, local_dir=None, allow_patterns=None, **kw):
        calls.append(
            {
                "repo_id": repo_id,
                "revision": revision,
                "local_dir": Path(local_dir),
                "allow_patterns": list(allow_patterns),
            }
        )
        if hub_state.get("fail_after") is not None:
            for k in sorted(allow_patterns)[: hub_state["fail_after"]]:
                (Path(local_dir) / k).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src / k, Path(local_dir) / k)
            raise OSError("connection reset")
        for k in allow_patterns:
            if (src / k).exists() and not (Path(local_dir) / k).exists():
                (Path(local_dir) / k).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src / k, Path(local_dir) / k)
        return str(local_dir)

    hub_state: dict = {"src": src, "calls": calls}
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    return hub_state


# ----------------------------------------------------------------------------- the lock


def test_shipped_lock_is_valid(monkeypatch):
    monkeypatch.delenv("AVATAR_WEIGHTS_LOCK", raising=False)
    entries = load_lock()
    assert {"fan-2d", "s3fd", "sd-image-variations", "face-parsing"} <= set(entries)
    for e in entries.values():
        assert e.licence and e.homepage.startswith("https://") and e.files
        if e.kind == "hf":
            assert re.fullmatch(r"[0-9a-f]{40}", e.revision), e.name  # pinned to a commit, not a branch
        elif e.kind == "pip":
            assert e.files[0].sha256 and e.install and e.package and e.module, e.name
        elif e.kind == "manual":
            assert e.source_file and e.url.startswith("https://") and e.files[0].path.endswith(".safetensors")
        else:
            assert e.sha256_prefix and e.files[0].path.find(e.sha256_prefix) >= 0
    sd = entries["sd-image-variations"]
    assert {f.path.split("/")[0] for f in sd.files} >= {
        "unet",
        "vae",
        "image_encoder",
        "scheduler",
        "feature_extractor",
    }
    assert flame_info()["licensed"] is True
    assert env_var_for("sd-image-variations") == "AVATAR_WEIGHTS_SD_IMAGE_VARIATIONS"


@pytest.mark.parametrize(
    "text, match",
    [
        ("lock_version = 1\n[models.x\n", "not valid TOML"),
        ('lock_version = 2\n[models.x]\nkind = "hf"\n', "lock_version 2"),
        ("lock_version = 1\n", "no \\[models"),
        ('lock_version = 1\n[models.x]\nkind = "ftp"\n', "kind 'ftp'"),
        (
            'lock_version = 1\n[models.x]\nkind = "hf"\nrevision = "abc"\nhomepage = "h"\nrepo = "r"\nfiles = [{path = "a"}]\n',
            "missing or empty 'licence'",
        ),
        (
            'lock_version = 1\n[models.x]\nkind = "hf"\nrevision = "abc"\nhomepage = "h"\nlicence = "l"\nrepo = "r"\nfiles = []\n',
            "non-empty list",
        ),
        (
            'lock_version = 1\n[models.x]\nkind = "hf"\nrevision = "abc"\nhomepage = "h"\nlicence = "l"\nrepo = "r"\nfiles = [{path = "a", sha256 = "XYZ"}]\n',
            "64 lower-case hex",
        ),
        (
            'lock_version = 1\n[models.x]\nkind = "url"\nrevision = "abc"\nhomepage = "h"\nlicence = "l"\nurl = "u"\nfile = "f"\nsha256_prefix = "zz"\n',
            "sha256_prefix",
        ),
    ],
)
def test_bad_lock_is_one_clear_error(tmp_path, monkeypatch, capsys, text, match):
    p = tmp_path / f"bad{abs(hash(text))}.lock"
    p.write_text(text)
    monkeypatch.setenv("AVATAR_WEIGHTS_LOCK", str(p))
    with pytest.raises(InputError, match=match) as ei:
        load_lock()
    assert str(p) in str(ei.value)
    assert main(["weights", "list"]) == 2
    err = capsys.readouterr().err
    assert "weights lock" in err and len(err.strip().splitlines()) == 1


def test_missing_lock_and_unknown_model(tmp_path, monkeypatch, lock, capsys):
    with pytest.raises(InputError, match="unknown model 'nope'.*tiny-hf, tiny-url"):
        get_entry("nope")
    assert main(["weights", "path", "nope"]) == 2
    monkeypatch.setenv("AVATAR_WEIGHTS_LOCK", str(tmp_path / "absent.lock"))
    with pytest.raises(EnvironmentProblem, match="weights lock not found"):
        load_lock()


# ----------------------------------------------------------------------------- resolver


def _fill(folder: Path, files=FILES) -> Path:
    for k, v in files.items():
        (folder / k).parent.mkdir(parents=True, exist_ok=True)
        (folder / k).write_bytes(v)
    return folder


def test_resolver_order_override_then_cache_then_missing(tmp_path, lock, monkeypatch):
    e = get_entry("tiny-hf")
    # nothing anywhere: MissingModelError (exit 3) naming the model and the fetch command
    with pytest.raises(MissingModelError) as ei:
        resolve("tiny-hf")
    msg = str(ei.value)
    assert (
        ei.value.exit_code == 3 and "'tiny-hf'" in msg and "`avatar weights fetch tiny-hf`" in msg and e.env_var in msg
    )
    # an incomplete cache folder does not count
    cache = cache_folder(e)
    _fill(cache, {"config.json": FILES["config.json"]})
    with pytest.raises(MissingModelError, match="incomplete"):
        resolve("tiny-hf")
    _fill(cache)
    assert resolve("tiny-hf") == cache
    assert resolve_file("tiny-hf", "sub/weights.bin") == cache / "sub" / "weights.bin"
    with pytest.raises(MissingModelError, match="lacks nothing.bin"):
        resolve_file("tiny-hf", "nothing.bin")
    # the override wins over the cache, and is trusted as given (need not hold every file)
    own = _fill(tmp_path / "own", {"config.json": b"{}"})
    monkeypatch.setenv(e.env_var, str(own))
    assert resolve("tiny-hf") == own
    monkeypatch.setenv(e.env_var, str(tmp_path / "does-not-exist"))
    with pytest.raises(MissingModelError, match="does not exist"):
        resolve("tiny-hf")


def test_url_override_may_name_the_file(tmp_path, lock, monkeypatch):
    e = get_entry("tiny-url")
    f = tmp_path / "my-copy.pth"
    f.write_bytes(URL_DATA)
    monkeypatch.setenv(e.env_var, str(f))
    assert resolve_file("tiny-url") == f and resolve("tiny-url") == tmp_path
    assert verify("tiny-url").ok and verify("tiny-url").hashes_checked == 1


def test_offline_missing_model_is_the_one_message(lock, monkeypatch, hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingModelError) as ei:
        resolve("tiny-hf")
    assert "`avatar weights fetch tiny-hf`" in str(ei.value)
    with pytest.raises(MissingModelError, match="offline") as ei:
        fetch("tiny-hf")
    assert "tiny-hf" in str(ei.value) and "avatar weights fetch tiny-hf" in str(ei.value)
    assert hub["calls"] == []  # nothing attempted
    assert not cache_folder(get_entry("tiny-hf")).parent.exists()


# ----------------------------------------------------------------------------- status / verify


def test_verify_detects_corruption_and_gaps(lock):
    e = get_entry("tiny-hf")
    assert status("tiny-hf").state == "missing"
    cache = _fill(cache_folder(e))
    st = verify("tiny-hf")
    assert st.ok and st.hashes_checked == 2 and st.source == "cache" and st.size == sum(len(v) for v in FILES.values())
    w = cache / "sub" / "weights.bin"
    w.write_bytes(b"\x00\x01weightz" + FILES["sub/weights.bin"][9:])  # same size, one byte different
    assert status("tiny-hf").ok  # presence only
    st = verify("tiny-hf")
    assert st.state == "bad hash" and "sub/weights.bin" in st.problems[0]
    (cache / "notes.txt").unlink()
    assert status("tiny-hf").state == "incomplete"


def test_weights_cli_list_verify_path(lock, tmp_path, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-hf" in out and "tiny-url" in out and "someone/tiny" in out and "missing" in out and "MIT" in out
    assert main(["weights", "verify"]) == 3
    assert "missing" in capsys.readouterr().err
    rc = main(["weights", "path", "tiny-hf"])
    err = capsys.readouterr().err
    assert rc == 3 and "avatar weights fetch tiny-hf" in err and len(err.strip().splitlines()) == 1

    cache = _fill(cache_folder(get_entry("tiny-hf")))
    assert main(["weights", "path", "tiny-hf"]) == 0
    assert capsys.readouterr().out.strip() == str(cache)
    assert main(["weights", "verify", "tiny-hf"]) == 0
    assert "present" in capsys.readouterr().err
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "present" in out and f"{sum(len(v) for v in FILES.values())} B" in out, out
    (cache / "config.json").write_bytes(b'{"hidden": 9}')
    assert main(["weights", "verify", "tiny-hf"]) == 3
    assert "bad hash" in capsys.readouterr().err
    assert main(["weights", "list"]) == 0 and "bad hash" not in capsys.readouterr().out  # presence only
    assert main(["weights", "list", "--verify"]) == 0 and "bad hash" in capsys.readouterr().out
    assert main(["weights", "--help"]) == 0 and "fetch" in capsys.readouterr().out


# ----------------------------------------------------------------------------- fetch (hf)


def test_fetch_hf_pinned_checked_idempotent(lock, hub, capsys):
    e = get_entry("tiny-hf")
    folder = fetch("tiny-hf")
    assert folder == cache_folder(e) and resolve("tiny-hf") == folder
    (call,) = hub["calls"]
    assert call["repo_id"] == "someone/tiny" and call["revision"] == REV  # the pinned commit
    assert sorted(call["allow_patterns"]) == sorted(FILES)  # only the lock's files
    assert call["local_dir"] != folder and not call["local_dir"].exists()  # assembled aside, renamed into place
    for k, v in FILES.items():
        assert (folder / k).read_bytes() == v
    assert verify("tiny-hf").ok
    fetch("tiny-hf")  # already complete: nothing downloaded
    assert len(hub["calls"]) == 1
    fetch("tiny-hf", force=True)
    assert len(hub["calls"]) == 2 and verify("tiny-hf").ok
    assert main(["weights", "fetch", "tiny-hf"]) == 0 and len(hub["calls"]) == 2


def test_fetch_bad_hash_leaves_nothing_in_the_cache(lock, hub, capsys):
    (hub["src"] / "sub" / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(EnvironmentProblem, match="sub/weights.bin has sha256") as ei:
        fetch("tiny-hf")
    assert "deleted" in str(ei.value)
    e = get_entry("tiny-hf")
    assert not cache_folder(e).exists()
    root = cache_folder(e).parent
    assert not [p for p in root.rglob("weights.bin")]  # the bad file is gone
    with pytest.raises(MissingModelError):
        resolve("tiny-hf")
    assert main(["weights", "fetch", "tiny-hf"]) == 3
    err = capsys.readouterr().err
    assert "sha256" in err and len(err.strip().splitlines()) == 1


def test_fetch_resumes_after_interruption(lock, hub):
    hub["fail_after"] = 1
    with pytest.raises(EnvironmentProblem, match="could not download 'tiny-hf'.*connection reset"):
        fetch("tiny-hf")
    first = hub["calls"][0]["local_dir"]
    assert first.exists() and len([p for p in first.rglob("*") if p.is_file()]) == 1  # kept for the next run
    with pytest.raises(MissingModelError):
        resolve("tiny-hf")
    hub["fail_after"] = None
    folder = fetch("tiny-hf")
    assert hub["calls"][1]["local_dir"] == first  # the same partial folder: the hub client resumes into it
    assert verify("tiny-hf").ok and folder.exists() and not first.exists()


def test_fetch_with_override_downloads_nothing(lock, hub, tmp_path, monkeypatch):
    own = _fill(tmp_path / "own")
    monkeypatch.setenv(get_entry("tiny-hf").env_var, str(own))
    assert fetch("tiny-hf") == own and hub["calls"] == []


# ----------------------------------------------------------------------------- fetch (url)


class _FakeResponse:
    def __init__(self, data: bytes, status: int, total: int | None):
        self._buf = io.BytesIO(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data))} if total is not None else {}

    def read(self, n=-1):
        return self._buf.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.fixture
def fake_url(monkeypatch):
    import urllib.request

    state = {"data": URL_DATA, "requests": []}

    def urlopen(req, timeout=None):
        rng = req.get_header("Range")
        state["requests"].append(rng)
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            return _FakeResponse(state["data"][start:], 206, 1)
        return _FakeResponse(state["data"], 200, 1)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return state


def test_fetch_url_resumes_and_checks_prefix(lock, fake_url):
    e = get_entry("tiny-url")
    partial = cache_folder(e).parent / f".{e.revision}.partial"
    partial.mkdir(parents=True)
    (partial / (e.files[0].path + ".part")).write_bytes(URL_DATA[:5000])  # an interrupted download
    seen = []
    folder = fetch("tiny-url", progress=lambda done, total: seen.append((done, total)))
    assert fake_url["requests"] == ["bytes=5000-"]
    assert (folder / e.files[0].path).read_bytes() == URL_DATA
    assert seen[-1] == (len(URL_DATA), len(URL_DATA))
    assert verify("tiny-url").ok and resolve_file("tiny-url") == folder / e.files[0].path


def test_fetch_url_bad_prefix_leaves_no_file(tmp_path, monkeypatch, fake_url):
    p = _write_lock(tmp_path / "other.lock", url_prefix="0000000000")
    monkeypatch.setenv("AVATAR_WEIGHTS_LOCK", str(p))
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(EnvironmentProblem, match="the lock pins 0000000000"):
        fetch("tiny-url")
    root = cache_folder(get_entry("tiny-url")).parent
    assert not [q for q in root.rglob("*.pth")] and not cache_folder(get_entry("tiny-url")).exists()
