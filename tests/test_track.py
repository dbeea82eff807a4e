"""`avatar track`: the clip fit against known FLAME motion, face following, lost frames, the CLI
(expression file that `animate` plays, --json, bad input -> one line, no output)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from avatarcli.cli import main
from avatarcli.testing import synthetic_clip as sc
from avatarcli.track.fit import TrackConfig, track_flame
from avatarcli.track.landmarks import fill_lost, follow

SIZE = (256, 256)
FAST = dict(n_shape=20, n_expr=10, iters=6)


@pytest.fixture(scope="module")
def clip(flame_model):
    truth = sc.clip_params(30, seed=3, fast_turn_deg=40.0, fast_frames=4)
    pts, clean = sc.clip_landmarks(flame_model, truth, SIZE, noise_px=1.0, seed=3)
    return truth, pts, clean


@pytest.fixture(scope="module")
def fits(flame_model, clip):
    _, pts, _ = clip
    ones = np.ones(pts.shape[:2])
    tracked = track_flame(flame_model, pts, ones, SIZE, 30.0, TrackConfig(**FAST))
    independent = track_flame(flame_model, pts, ones, SIZE, 30.0, TrackConfig(smooth=0.0, **FAST))
    return tracked, independent


def test_track_recovers_the_motion_smoothly_and_without_lag(flame_model, clip, fits):
    truth, pts, clean = clip
    tracked, independent = fits
    # landmark error per frame against the noise-free points: below the 1 px noise
    assert tracked.landmark_error_px.shape == (30, 68)
    fp = sc.fit_params(tracked)
    from avatarcli.flame.forward import flame_forward
    from avatarcli.testing.synthetic_flame import project_fit_camera

    uv = project_fit_camera(flame_forward(flame_model.to(dtype=fp.shape.dtype), fp).landmarks, tracked.focal_px, SIZE)
    assert np.linalg.norm(uv - clean, axis=-1).mean() < 0.8
    # head rotation and jaw against the truth
    rot = sc.rotation_error_deg(sc.head_rotation(fp), sc.head_rotation(truth))
    assert rot.mean() < 4.0 and rot.max() < 8.0
    assert np.degrees(np.abs(tracked.jaw_pose[:, 0] - truth.jaw_pose[:, 0].numpy())).mean() < 2.5
    # jitter: well below independent per-frame fits, close to the truth's own
    j_t = sc.jitter_mm(sc.posed_vertices(flame_model, fp))
    j_i = sc.jitter_mm(sc.posed_vertices(flame_model, sc.fit_params(independent)))
    j_true = sc.jitter_mm(sc.posed_vertices(flame_model, truth))
    assert j_t < 0.4 * j_i, (j_t, j_i)
    assert j_t < 2.5 * j_true, (j_t, j_true)
    # the fast 40 degree turn is followed: no time shift, small error inside the turn
    Rf, Rt = sc.head_rotation(fp), sc.head_rotation(truth)
    yaw_f, yaw_t = (np.degrees(np.arctan2(R[:, 0, 2], R[:, 2, 2])) for R in (Rf, Rt))
    assert sc.best_lag(yaw_f, yaw_t) == 0
    assert np.abs(yaw_f - yaw_t)[11:19].max() < 7.0


def test_lost_frames_are_bridged_by_the_temporal_prior(flame_model, clip):
    truth, pts, _ = clip
    T = pts.shape[0]
    lost = np.zeros(T, bool)
    lost[[8, 9, 22]] = True
    holed = pts.copy()
    holed[lost] = np.nan
    cl = fill_lost(np.nan_to_num(holed), np.ones(pts.shape[:2]), lost)
    assert cl.lost_frames() == [8, 9, 22]
    # linear in time: frames 8, 9 lie at 1/3, 2/3 between frames 7 and 10
    np.testing.assert_allclose(cl.points[8], pts[7] + (pts[10] - pts[7]) / 3, atol=1e-9)
    np.testing.assert_allclose(cl.points[9], pts[7] + 2 * (pts[10] - pts[7]) / 3, atol=1e-9)
    assert (cl.scores[lost] == 0).all() and (cl.scores[~lost] == 1).all()
    fit = track_flame(flame_model, cl.points, cl.scores, SIZE, 30.0, TrackConfig(**FAST))
    rot = sc.rotation_error_deg(sc.head_rotation(sc.fit_params(fit)), sc.head_rotation(truth))
    assert rot[lost].max() < 8.0


def test_follow_keeps_the_tracked_face():
    me = np.array([100.0, 100, 200, 200])
    other = np.array([300.0, 90, 420, 210])  # a bigger second face
    boxes = np.array([[*other, 0.99], [*(me + 6), 0.9]])
    assert follow(boxes, None) == 0  # the track starts on the largest face ...
    assert follow(boxes, me) == 1  # ... but a running track keeps its own
    assert follow(boxes[:1], me) is None  # only the other face visible: lost, not stolen
    fast = np.array([[*(me + [40, 0, 40, 0]), 0.9]])  # moved 40 % of its size in one frame
    assert follow(fast, me) == 0
    assert follow(np.zeros((0, 5)), me) is None
    assert follow(boxes, None, face_index=1) == 1


def _video(path, T, size=64):
    iio.imwrite(path, np.full((T, size, size, 3), 90, np.uint8), fps=25)
    return path


def test_cli_track_then_animate(tmp_path, flame_dir, flame_model, clip, capsys):
    _, pts, _ = clip
    T = 12
    video = _video(tmp_path / "me.mp4", T)
    lm = pts[:T].copy()
    lm[4] = np.nan  # a lost frame
    np.save(tmp_path / "lm.npy", lm)
    out = tmp_path / "me.npz"
    rc = main(["track", str(video), "-o", str(out), "--landmarks", str(tmp_path / "lm.npy"), "--flame", str(flame_dir),
               "--n-expr", "10", "--json"])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == T and summary["fps"] == 25.0 and summary["lost_frames"] == [4]
    assert len(summary["landmark_error_px"]) == T
    from avatarcli.animate.expressions import load_expression

    clipf = load_expression(out)
    assert clipf.n_frames == T and clipf.fps == 25.0 and clipf.expr.shape == (T, 10)
    assert set(clipf.ignored) >= {"shape", "lost", "landmark_error_px"}
    np.testing.assert_allclose(np.median(clipf.translation, 0), 0, atol=1e-6)  # relative to the median place
    # ... and `animate` plays it on a head
    from tests.test_animate_cli import _fit, _write_head

    head = tmp_path / "head.ply"
    _write_head(head, flame_model_disk(flame_dir), _fit(flame_model_disk(flame_dir)))
    frames = tmp_path / "frames"
    rc = main(["animate", str(head), "--expr", str(out), "-o", str(frames), "--flame", str(flame_dir), "--size", "24"])
    assert rc == 0
    assert len(list(frames.glob("frame_*.png"))) == T


def flame_model_disk(flame_dir):
    from avatarcli.flame.loader import load_flame

    return load_flame(flame_dir)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("not_video", "not a video"),
        ("bad_video", "video"),
        ("count", "frames"),
        ("suffix", ".npz"),
        ("both", "face index"),
    ],
)
def test_cli_bad_input_one_line_no_output(tmp_path, flame_dir, capsys, case, needle):
    video = _video(tmp_path / "v.mp4", 5)
    np.save(tmp_path / "lm.npy", np.zeros((5, 68, 2)) + np.arange(68)[:, None])
    out = tmp_path / "o.npz"
    lm = tmp_path / "lm.npy"
    if case == "not_video":
        video = tmp_path / "v.txt"
        video.write_text("hello")
    elif case == "bad_video":
        (tmp_path / "b.mp4").write_bytes(b"\x00garbage" * 20)
        video = tmp_path / "b.mp4"
    elif case == "count":
        np.save(lm, np.zeros((3, 68, 2)))
    elif case == "suffix":
        out = tmp_path / "o.mp4"
    extra = ["--face-index", "1"] if case == "both" else []
    rc = main(["track", str(video), "-o", str(out), "--landmarks", str(lm), "--flame", str(flame_dir), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_detector_path_batches_fan(tmp_path, fa_weights, fast_fan):
    from avatarcli.landmarks.detect import load_landmark_detector
    from avatarcli.track.frames import open_frames
    from avatarcli.track.landmarks import detect_clip

    frames = np.full((5, 128, 128, 3), 60, np.uint8)
    frames[:, 40:80, 50:70, 0] = 255  # a red blob: fast_fan's heatmaps peak on it
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        iio.imwrite(folder / f"f{i}.png", f)
    src = open_frames(folder)
    assert src.n_frames == 5 and src.size == (128, 128)
    cl = detect_clip(src, load_landmark_detector("cpu"), batch=3)
    assert not cl.lost.any() and cl.points.shape == (5, 68, 2)
    assert [c[0] for c in fast_fan] == [3, 2]  # FAN ran on batches of tracked crops
    # every point lies in the red blob (pixel-centre coordinates)
    assert (cl.points[..., 0] > 45).all() and (cl.points[..., 0] < 75).all()


@pytest.mark.parametrize("T", [1, 2, 5, 8])
def test_block_solver_matches_a_dense_solve(T):
    """The frame-banded normal matrix solved by the paired block-Cholesky sweep equals
    torch.linalg.solve on the same matrix built densely from its definition."""
    import torch

    from avatarcli.track.fit import _block_tridiagonal_solve, _frame_bands

    g = torch.Generator().manual_seed(T)
    Q, R = 4, 3
    J = torch.randn(T, 6, Q, generator=g, dtype=torch.float64)
    H = J.transpose(1, 2) @ J + 0.1 * torch.eye(Q, dtype=torch.float64)
    W = torch.rand(max(T - 2, 0), Q, generator=g, dtype=torch.float64) * 5 if T >= 3 else None
    rhs = torch.randn(T, Q, R, generator=g, dtype=torch.float64)
    dense = torch.block_diag(*H)
    if W is not None:
        L = torch.zeros(T - 2, T, dtype=torch.float64)
        for r in range(T - 2):
            L[r, r : r + 3] = torch.tensor([1.0, -2.0, 1.0])
        for k in range(Q):  # component k of every frame: L^T diag(W[:, k]) L
            idx = torch.arange(T) * Q + k
            dense[idx[:, None], idx[None, :]] += L.T @ torch.diag(W[:, k]) @ L
    lam = 0.01
    dense = dense + torch.diag(lam * torch.diagonal(dense) + 1e-9)
    want = torch.linalg.solve(dense, rhs.reshape(T * Q, R)).reshape(T, Q, R)
    got = _block_tridiagonal_solve(*_frame_bands(H, W, lam), rhs)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_detector_with_its_own_points_is_followed(tmp_path):
    """A detector that boxes and places the points itself (the dlib one's interface): the track
    keeps the first frame's face while a bigger second face appears, and skips frames without it."""
    from avatarcli.track.frames import open_frames
    from avatarcli.track.landmarks import detect_clip

    class TwoFaces:
        def faces(self, image):
            t = int(image.rgb[0, 0, 0])  # the frame number, written into the pixels
            me = [20.0 + 2 * t, 20, 60 + 2 * t, 60, 0.9]
            other = [70.0, 10, 125, 70, 0.99]
            if t == 3:
                return np.array([other])  # only the other face: lost
            return np.array([me] if t == 0 else [other, me])

        def points(self, image, box):
            return np.tile((box[:2] + box[2:4]) / 2, (68, 1)), np.ones(68)

    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(6):
        iio.imwrite(folder / f"{t:02d}.png", np.full((128, 128, 3), t, np.uint8))
    cl = detect_clip(open_frames(folder), TwoFaces())
    assert cl.lost_frames() == [3]
    np.testing.assert_allclose(cl.points[:, 0, 0], 40 + 2 * np.arange(6))  # frame 3 interpolated
