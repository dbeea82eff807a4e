"""The mouth interior added at init: an opened jaw shows a dark mouth (not the inside of the head),
a closed mouth looks as before from the front to the side; the interior is rigid with the skull and
the jaw joints (not with the skin, so the photo's expression moves none of it); it survives head.ply
and is carried by animate's re-posing. Rendered by the torch rasterizer on the synthetic FLAME with
a lip slit (avatarcli.testing.synthetic_mouth)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatarcli.animate.pose import HeadPoser
from avatarcli.animate.sequence import FrameSequence
from avatarcli.errors import ArtifactError
from avatarcli.flame.forward import flame_forward
from avatarcli.flame.params import FlameParams
from avatarcli.gaussians.init import InitConfig, init_gaussians, init_with_details
from avatarcli.gaussians.mouth import lip_opening
from avatarcli.gaussians.ply import HeadMeta, read_gaussian_ply, write_gaussian_ply
from avatarcli.render.api import render
from avatarcli.render.camera import orbit_camera
from avatarcli.testing.synthetic_mouth import make_synthetic_flame_with_mouth, slit_outline
from avatarcli.testing.synthetic_photo import make_synthetic_photo

SIZE = 96
N = 20000


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """(model, photo, poser with the mouth, poser without, number of surface Gaussians), the first
    read back from head.ply."""
    model = make_synthetic_flame_with_mouth()
    photo = make_synthetic_photo(model, size=SIZE, yaw_deg=0.0, pitch_deg=0.0, jaw_open=0.0, expr_scale=0.0)
    ply, info = init_with_details(model, photo.fit, photo.rgb, InitConfig(n_gaussians=N))
    ns = info.points.shape[0]
    path = tmp_path_factory.mktemp("mouth") / "head.ply"
    write_gaussian_ply(path, ply)
    plain = init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=ns, mouth_fraction=0.0))
    assert torch.equal(plain.gaussians.means, ply.gaussians.means[:ns])  # same surface samples
    return model, photo, HeadPoser.from_ply(model, read_gaussian_ply(path)), HeadPoser.from_ply(model, plain), ns


def _frames(model, jaw=(0.0,), expr=None, neck=None, glob=None, trans=None) -> FrameSequence:
    T = len(jaw)
    z = lambda k: np.zeros((T, k), np.float32)  # noqa: E731
    jp = z(3)
    jp[:, 0] = jaw
    e = z(model.exprdirs.shape[-1])
    if expr is not None:
        e[:, : len(expr)] = expr
    a = lambda v: z(3) if v is None else np.tile(np.asarray(v, np.float32), (T, 1))  # noqa: E731
    return FrameSequence(expr=e, jaw_pose=jp, neck_pose=a(neck), eyes_pose=z(6), global_pose=a(glob),
                         translation=a(trans), fps=25.0, clip=np.zeros(T, np.int64))  # fmt: skip


def _shot(poser, seq, yaw=0.0) -> np.ndarray:
    cam = orbit_camera(yaw, 0, distance=0.3, target=(0, -0.035, 0.06), fov_deg=20, width=SIZE, height=SIZE)
    g = next(poser.posed(seq))
    return render(g, cam, torch.ones(3), backend="torch").rgb.numpy()


def _slit_mask(model, poser, seq) -> np.ndarray:
    import cv2

    cam = orbit_camera(0, 0, distance=0.3, target=(0, -0.035, 0.06), fov_deg=20, width=SIZE, height=SIZE)
    v = poser.vertices(seq)[0, : model.v_template.shape[0]]
    poly = np.round(cam.project(slit_outline(v)).numpy()).astype(np.int32)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [poly], 1)
    return cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0


def test_open_mouth_is_dark_inside(head):
    model, photo, with_mouth, plain, _ = head
    seq = _frames(model, jaw=(0.3,))
    mask = _slit_mask(model, with_mouth, seq)
    assert mask.sum() > 150  # the lips have parted
    skin = float(np.median(_shot(plain, _frames(model))[20:76, 20:76].mean(-1)))
    before, after = _shot(plain, seq)[mask].mean(-1), _shot(with_mouth, seq)[mask].mean(-1)
    assert float(before.mean()) > 0.8 * skin  # without: the inside of the head, skin-coloured
    assert float(after.mean()) < 0.65 * skin  # with: a mouth
    assert float((after < 0.25).mean()) > 0.3  # much of it the dark cavity (the rest teeth and tongue)


@pytest.mark.parametrize("yaw", [0.0, 45.0, 90.0])
def test_closed_mouth_looks_as_before(head, yaw):
    """Closed, the interior is faded out (its opacity follows the lip opening): the head renders as
    without it, from the front to the side (before the fade: 40.3 / 43.7 / 54.0 dB PSNR and teeth
    showing faintly through the lip slit, max pixel change 0.24)."""
    model, _, with_mouth, plain, _ = head
    a, b = _shot(plain, _frames(model), yaw), _shot(with_mouth, _frames(model), yaw)
    assert float(np.abs(a - b).max()) < 1e-3  # a quarter of an 8-bit level (float sums in another order)


def test_interior_fades_with_the_lip_opening(head):
    model, _, with_mouth, _, ns = head
    jaws = (0.0, 0.01, 0.02, 0.04, 0.3)
    seq = _frames(model, jaw=jaws)
    V = with_mouth.vertices(seq)  # [T, V + 3A, 3]
    # the opening against flame_forward's own landmarks (the other path to the lip points)
    p = FlameParams(with_mouth.shape.expand(len(jaws), -1), torch.as_tensor(seq.expr), torch.zeros(len(jaws), 3),
                    torch.zeros(len(jaws), 3), torch.as_tensor(seq.jaw_pose), torch.zeros(len(jaws), 6),
                    torch.zeros(len(jaws), 3))  # fmt: skip
    L = flame_forward(model, p).landmarks
    ref = (L[:, [61, 62, 63]] - L[:, [67, 66, 65]]).norm(dim=-1).mean(-1) / (L[:, 54] - L[:, 48]).norm(dim=-1)
    opening = lip_opening(model, V[:, : model.v_template.shape[0]])
    np.testing.assert_allclose(opening.numpy(), ref.numpy(), rtol=1e-5, atol=1e-7)
    op = with_mouth.gaussians(V).opacities  # [T, N]
    stored = torch.sigmoid(with_mouth.bound.opacity_logit)
    interior = torch.arange(op.shape[1]) >= ns
    assert torch.equal(op[:, ~interior], stored[~interior].expand(len(jaws), -1))  # the skin never fades
    share = (op[:, interior] / stored[interior]).mean(-1).numpy()  # the interior's visibility per frame
    assert share[0] == 0.0 and share[-1] == pytest.approx(1.0)
    assert (np.diff(share) >= 0).all() and 0.0 < share[2] < 1.0  # a smooth fade in between


def _rigid_reference(fwd_c, fwd_f, rot_c: Rotation, rot_f: Rotation, joint: int):
    """x -> R (x - J_c) + J_f: the joint's rigid motion from the canonical head to a frame, from scipy's
    rotations and flame_forward's posed joints."""
    R = (rot_f * rot_c.inv()).as_matrix()
    Jc, Jf = fwd_c.joints[0, joint].double().numpy(), fwd_f.joints[0, joint].double().numpy()
    return lambda x: (x - Jc) @ R.T + Jf


def _params_of(poser, seq):
    p = poser.canon_params
    p = p.__class__(**{**vars(p)})
    for k in ("expr", "jaw_pose", "neck_pose", "global_pose", "translation"):
        setattr(p, k, torch.as_tensor(getattr(seq, k)))
    return p


def test_interior_is_rigid_with_skull_and_jaw(head):
    """Under a frame with neck, jaw and global rotation and a translation, the upper interior moves
    exactly as the skull joint, the lower one as the jaw joint (scipy's rotations about
    flame_forward's posed joints); a strong expression then moves the lips, not the interior (FLAME's
    joints shift a little with expression: under 1 mm)."""
    model, photo, poser, _, ns = head
    neck, jaw, glob, trans = [0.1, 0.25, -0.05], [0.35, 0.02, 0.0], [0.05, -0.3, 0.1], [0.01, -0.02, 0.03]
    seq = _frames(model, jaw=(jaw[0],), neck=neck, glob=glob, trans=trans)
    seq.jaw_pose[0] = jaw
    fc, ff = flame_forward(model, poser.canon_params, False), flame_forward(model, _params_of(poser, seq), False)
    rv = Rotation.from_rotvec
    R_head_c, R_head_f = rv(np.asarray(photo.fit.neck_pose).reshape(3)), rv(glob) * rv(neck)
    R_jaw_c, R_jaw_f = R_head_c * rv(np.asarray(photo.fit.jaw_pose).reshape(3)), R_head_f * rv(jaw)
    x_c = poser.gaussians(poser.canonical).means.double().numpy()[ns:]  # [M, 3] the interior, canonical
    x_f = next(poser.posed(seq)).means.double().numpy()[ns:]
    assert np.linalg.norm(x_f - x_c, axis=1).min() > 5e-3  # everything moved (metres)
    up = np.abs(x_f - _rigid_reference(fc, ff, R_head_c, R_head_f, 1)(x_c)).max(1)
    lo = np.abs(x_f - _rigid_reference(fc, ff, R_jaw_c, R_jaw_f, 2)(x_c)).max(1)
    assert (np.minimum(up, lo) < 2e-5).all()  # every Gaussian follows one of the two joints exactly
    assert (up < 2e-5).sum() > 0.3 * len(up) and (lo < 2e-5).sum() > 0.3 * len(lo)  # both parts exist

    seq_e = _frames(model, jaw=(jaw[0],), expr=[2.0, -2.0, 1.5, 1.0], neck=neck, glob=glob, trans=trans)
    seq_e.jaw_pose[0] = jaw
    x_e = next(poser.posed(seq_e)).means.double().numpy()[ns:]
    lips = lambda s: flame_forward(model, _params_of(poser, s)).landmarks[0, 48:].double().numpy()  # noqa: E731
    assert np.linalg.norm(lips(seq_e) - lips(seq), axis=1).max() > 5e-3
    assert np.linalg.norm(x_e - x_f, axis=1).max() < 1e-3


def test_photo_expression_moves_no_part_of_it():
    """The interior is placed by the joints, not by skin triangles: a fit with a strong expression
    (the lips and chin moved) gets the same canonical interior as one without."""
    from dataclasses import replace

    from avatarcli.gaussians.mouth import mouth_interior

    model = make_synthetic_flame_with_mouth()
    photo = make_synthetic_photo(model, size=32, yaw_deg=0.0, pitch_deg=0.0, jaw_open=0.0, expr_scale=0.0)
    fit0 = photo.fit
    expr = np.zeros_like(np.asarray(fit0.expr))
    expr[:4] = [2.0, -2.0, 1.5, 1.0]
    a = mouth_interior(model, fit0.params())
    b = mouth_interior(model, replace(fit0, expr=expr).params())
    assert a is not None and b is not None
    v0 = flame_forward(model, fit0.params(), False).vertices[0]
    v1 = flame_forward(model, replace(fit0, expr=expr).params(), False).vertices[0]
    assert float((v1 - v0).norm(dim=-1).max()) > 5e-3  # the expression does move the face
    assert float((a.gaussians.means - b.gaussians.means).abs().max()) < 1e-6


def test_head_ply_round_trip_and_old_heads(head, tmp_path):
    """Anchors and the lip state round-trip through the header (version 4); the same head without the
    lip state (as written before version 4) is version 3 and reads with none (head_gate: derived from
    FLAME, else None); a head without a mouth is still written as version 1 or 2 (readable by older
    avatarcli); a binding beyond the anchors and a bad lip state are refused."""
    from dataclasses import replace

    from avatarcli.gaussians.mouth import head_gate, interior_visibility
    from avatarcli.gaussians.ply import ply_bytes

    model, photo, poser, _, ns = head
    ply = init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=2000))
    assert ply.meta is not None and ply.meta.n_anchors == 2 and ply.meta.n_faces == model.faces.shape[0]
    assert int(ply.binding.max()) == model.faces.shape[0] + 1
    write_gaussian_ply(tmp_path / "a.ply", ply)
    back = read_gaussian_ply(tmp_path / "a.ply")
    assert back.meta.version == 4 and back.meta.anchor_joints == (1, 2)
    np.testing.assert_array_equal(back.meta.anchors, ply.meta.anchors)
    assert ply_bytes(back) == (tmp_path / "a.ply").read_bytes()
    assert (back.meta.lip_opening, back.meta.rest_lip_opening) == (ply.meta.lip_opening, ply.meta.rest_lip_opening)
    # the stored state against lip_opening of the canonical vertices the head is bound to
    v = poser.canonical[None, : model.v_template.shape[0]]
    assert back.meta.lip_opening == pytest.approx(float(lip_opening(model, v)[0]), abs=1e-6)
    assert back.meta.rest_lip_opening == pytest.approx(poser.rest_opening, abs=1e-6)
    assert head_gate(back.meta).visibility == float(interior_visibility(torch.tensor(0.0), 0.0))  # closed: 0
    old = replace(back, meta=replace(back.meta, lip_opening=None, rest_lip_opening=None))
    write_gaussian_ply(tmp_path / "v3.ply", old)
    header = (tmp_path / "v3.ply").read_bytes().split(b"end_header")[0].replace(b"\ncomment avatarcli-meta ", b"")
    assert b'"version":3' in header and b"lip_opening" not in header
    v3 = read_gaussian_ply(tmp_path / "v3.ply")
    assert v3.meta.version == 3 and v3.meta.lip_opening is None and v3.meta.n_anchors == 2
    assert head_gate(v3.meta) is None and head_gate(v3.meta, model) == head_gate(back.meta)
    text = back.meta.to_json()
    assert HeadMeta.from_json(text, tmp_path).lip_opening == back.meta.lip_opening
    for bad_value in ('"lip_opening":-1.0', '"lip_opening":"x"', '"lip_opening":1e9'):
        bad_text = re.sub(r'"lip_opening":[0-9.e-]+', bad_value, text, count=1)
        assert bad_text != text
        with pytest.raises(ArtifactError, match="lip_opening"):
            HeadMeta.from_json(bad_text, tmp_path)
    plain = init_gaussians(model, photo.fit, photo.rgb, InitConfig(n_gaussians=500, mouth_fraction=0.0))
    assert b'"version":1' in ply_bytes(plain).split(b"end_header")[0].replace(b"comment avatarcli-meta ", b"")
    bad = back.__class__(back.gaussians, back.binding.clone(), back.meta)
    bad.binding[-1] = model.faces.shape[0] + 2
    write_gaussian_ply(tmp_path / "b.ply", bad)
    with pytest.raises(ArtifactError, match="binding out of range"):
        read_gaussian_ply(tmp_path / "b.ply")
