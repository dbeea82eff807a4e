"""68 iBUG face landmarks with face-alignment's 2D FAN and its S3FD face detector.

The networks are face-alignment's own classes (`face_alignment.models.FAN(4)`,
`face_alignment.detection.sfd` S3FD) loaded from the files that
`avatarcli.weights` resolves for the lock entries "fan-2d" and "s3fd". Nothing
here downloads: face-alignment's FaceAlignment() would fetch its weights through
torch hub, so it is not used; the networks are built and loaded here instead.

Pipeline for one photo (LoadedImage; `rgb` may be a downscaled working copy):
  1. faces: S3FD on the working image, itself shrunk to a long side of at most
     `detect_max_side` (speed; portraits hold big faces), boxes scored > 0.5,
     NMS (face-alignment's), boxes lying mostly outside the image dropped;
     or the caller's `bbox` (original pixels), which skips detection.
  2. crop: face-alignment's convention (centre = box centre moved up by 0.12 of
     the box height, side = 200 * (w + h) / 195) resampled to 256 x 256 with an
     exact affine map (cv2.warpAffine; INTER_AREA pre-shrink when the face is
     more than twice the crop size, so big faces do not alias).
  3. FAN -> 68 heatmaps [68, 64, 64]; each point is the heatmap maximum moved a
     quarter cell towards its larger neighbour (face-alignment's rule), the score
     is the heatmap's maximum value. With `flip` the mirrored crop is run too and
     the two heatmaps are averaged (face-alignment sums them; averaging keeps the
     scores on the heatmap's scale).
  4. heatmap -> crop -> working -> ORIGINAL pixels, in floating point (face-
     alignment rounds to integers): heatmap cell k covers crop pixels 4k..4k+3,
     so u (centre convention) -> q = 4u + 1.5, then the inverse crop affine, then
     LoadedImage.to_original.

Coordinates everywhere: x right, y down, pixel centres at integer coordinates
(pixel (i, j) covers [j-0.5, j+0.5] x [i-0.5, i+0.5]). A box (x0, y0, x1, y1)
is the region [x0, x1] x [y0, y1] in that frame.

Several faces: `face_index=None` (default) takes the largest box. `face_index=K`
takes the K-th face in the order "box area descending; equal areas keep the
detector's order (score descending)", so K=0 is also the largest face.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from avatarcli.device import resolve_device
from avatarcli.errors import EnvironmentProblem, InputError, NoFaceError
from avatarcli.io.images import LoadedImage
from avatarcli.landmarks.artifact import N_LANDMARKS, Landmarks
from avatarcli.weights import get_entry, resolve_file

CROP = 256  # FAN input side (pixels)
HEATMAP = 64  # FAN heatmap side
REFERENCE_SCALE = 195.0  # face-alignment: crop side = 200 * (box w + box h) / REFERENCE_SCALE
CENTER_Y_OFFSET = 0.12  # face-alignment: crop centre moved up by this fraction of the box height
DETECT_MAX_SIDE = 640  # S3FD input long side (pixels)
DETECT_THRESHOLD = 0.5  # S3FD face score threshold (face-alignment's default)
MIN_INSIDE = 0.5  # a detected box must have at least this fraction of its area inside the image

FAN_MODEL = "fan-2d"
SFD_MODEL = "s3fd"

# face-alignment's left-right correspondence of the 68 iBUG points (for flip averaging)
_FLIP_PAIRS = [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
               26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 27, 28, 29, 30, 35,
               34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41,
               40, 54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63,
               62, 61, 60, 67, 66, 65]  # fmt: skip


@dataclass
class LandmarkDetector:
    """Loaded networks; build with load_landmark_detector()."""

    fan: torch.nn.Module  # face_alignment.models.FAN(4): [B, 3, 256, 256] in 0..1 -> list of [B, 68, 64, 64]
    sfd: object | None  # face-alignment SFDDetector (None: only --bbox / given boxes work)
    device: torch.device
    name: str  # model + revision, written to landmarks.npz `detector`
    flip: bool = False
    detect_max_side: int = DETECT_MAX_SIDE


def _revision(model: str) -> str:
    return get_entry(model).revision


def detector_name(need_detector: bool = True) -> str:
    import face_alignment

    name = f"face-alignment {face_alignment.__version__} 2DFAN4@{_revision(FAN_MODEL)}"
    if need_detector:
        name += f" + s3fd@{_revision(SFD_MODEL)}"
    return name


def _load_state_dict(model: str, path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise EnvironmentProblem(
            f"model {model!r}: cannot load {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"check it with `avatar weights verify {model}` and fetch it again",
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise EnvironmentProblem(f"model {model!r}: {path} does not hold a state dict (got {type(sd).__name__})")
    if any(k.startswith("module.") for k in sd):  # saved from DataParallel
        meta = getattr(sd, "_metadata", None)
        sd = OrderedDict((k.removeprefix("module."), v) for k, v in sd.items())
        if meta is not None:
            sd._metadata = OrderedDict((k.removeprefix("module."), v) for k, v in meta.items())  # type: ignore[attr-defined]
    return sd


def _into(model: str, path, net: torch.nn.Module, sd: dict) -> None:
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise EnvironmentProblem(
            f"model {model!r}: {path} does not match the network ({first}); "
            f"check it with `avatar weights verify {model}`"
        ) from None


def _build(model: str, path, factory, sd: dict) -> torch.nn.Module:
    """factory() with the weights of `sd`: built on the meta device and the loaded tensors
    assigned (no random initialisation, no copy); plain construction + copy as a fallback."""
    try:
        with torch.device("meta"):
            net = factory()
        net.load_state_dict(sd, strict=True, assign=True)
        if not any(t.is_meta for t in [*net.parameters(), *net.buffers()]):
            return net
    except RuntimeError:
        pass  # reported with the file name below
    net = factory()
    _into(model, path, net, sd)
    return net


def _make_sfd(state_dict: dict, device: torch.device, threshold: float, path) -> object:
    from face_alignment.detection.core import FaceDetector
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.detection.sfd.sfd_detector import SFDDetector

    class _SFD(SFDDetector):
        """face-alignment's SFDDetector with weights given (its __init__ would download)."""

        def __init__(self) -> None:  # noqa: D401 - deliberately skips SFDDetector.__init__
            FaceDetector.__init__(self, str(device), False)
            self.filter_threshold = threshold

    det = _SFD()
    det.face_detector = _build(SFD_MODEL, path, s3fd, state_dict).to(device, torch.float32).eval()
    return det


def load_landmark_detector(
    device: str | torch.device = "auto",
    need_detector: bool = True,
    *,
    flip: bool = False,
    detect_max_side: int = DETECT_MAX_SIDE,
) -> LandmarkDetector:
    """Resolve "fan-2d" (and "s3fd" when need_detector) through avatarcli.weights, then load them.

    Missing weights raise MissingModelError (exit 3, naming `avatar weights fetch NAME`)
    before anything is loaded. `flip` also runs the mirrored crop (2x the FAN time)."""
    from face_alignment.models import FAN

    fan_path = resolve_file(FAN_MODEL)
    sfd_path = resolve_file(SFD_MODEL) if need_detector else None
    dev = resolve_device(device)

    fan = (
        _build(FAN_MODEL, fan_path, lambda: FAN(4), _load_state_dict(FAN_MODEL, fan_path)).to(dev, torch.float32).eval()
    )
    sfd = None
    if sfd_path is not None:
        sfd = _make_sfd(_load_state_dict(SFD_MODEL, sfd_path), dev, DETECT_THRESHOLD, sfd_path)
    return LandmarkDetector(fan, sfd, dev, detector_name(need_detector), flip=flip, detect_max_side=detect_max_side)


# ----------------------------------------------------------------------------------------------
# faces


def detect_faces(image: LoadedImage, detector) -> np.ndarray:
    """All faces the detector finds (S3FD, or dlib's HOG for a DlibDetector): [N, 5] float64
    x0 y0 x1 y1 score in ORIGINAL pixels, ordered by box area descending (ties: score descending).
    N may be 0."""
    if hasattr(detector, "faces"):  # DlibDetector
        return detector.faces(image)
    if detector.sfd is None:
        raise InputError(
            "this landmark detector was loaded without the face detector (need_detector=False): give a bbox"
        )
    rgb = image.rgb
    h, w = rgb.shape[:2]
    f = min(1.0, detector.detect_max_side / max(h, w))
    if f < 1.0:
        small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    else:
        small = rgb
    sh, sw = small.shape[:2]
    boxes = detector.sfd.detect_from_image(np.ascontiguousarray(small))
    if len(boxes) == 0:
        return np.zeros((0, 5))
    b = np.asarray(np.stack([np.asarray(x, dtype=np.float64).reshape(-1)[:5] for x in boxes]))  # [N, 5]
    # keep boxes mostly inside the detector's image (S3FD's coarse levels put anchors outside it)
    ix = np.clip(b[:, 2], 0, sw) - np.clip(b[:, 0], 0, sw)
    iy = np.clip(b[:, 3], 0, sh) - np.clip(b[:, 1], 0, sh)
    area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    keep = (area > 0) & (np.maximum(ix, 0) * np.maximum(iy, 0) >= MIN_INSIDE * area) & np.isfinite(b).all(1)
    b = b[keep]
    # detector corner coordinates -> original pixel-centre coordinates: x_orig = x_corner / s - 0.5
    sx = sw / w * image.scale
    sy = sh / h * image.scale
    out = b.copy()
    out[:, [0, 2]] = b[:, [0, 2]] / sx - 0.5
    out[:, [1, 3]] = b[:, [1, 3]] / sy - 0.5
    order = sorted(range(len(out)), key=lambda i: (-_area(out[i]), -out[i, 4], i))
    return out[order].reshape(-1, 5)


def _area(b: np.ndarray) -> float:
    return float((b[2] - b[0]) * (b[3] - b[1]))


def check_bbox(bbox: Sequence[float], image: LoadedImage) -> np.ndarray:
    """A user box (original pixels) as float64 [4]; InputError when unusable for this image."""
    b = np.asarray(bbox, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise InputError(f"bbox {list(bbox)}: expected 4 finite numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = b
    if not (x1 > x0 and y1 > y0):
        raise InputError(f"bbox {x0:g},{y0:g},{x1:g},{y1:g}: needs x1 > x0 and y1 > y0")
    h, w = image.original_size
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        raise InputError(f"bbox {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {w}x{h} image", path=image.path)
    return b


# ----------------------------------------------------------------------------------------------
# crop <-> image geometry


def crop_transform(bbox_work: np.ndarray) -> tuple[np.ndarray, float]:
    """Crop centre (working pixels) and crop side (working pixels) for a working-image box,
    face-alignment's rule (centre moved up by CENTER_Y_OFFSET of the box height)."""
    x0, y0, x1, y1 = (float(v) for v in bbox_work[:4])
    c = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 - (y1 - y0) * CENTER_Y_OFFSET])
    side = 200.0 * ((x1 - x0) + (y1 - y0)) / REFERENCE_SCALE
    return c, side


def crop_affine(center: np.ndarray, side: float, size: int = CROP) -> np.ndarray:
    """[2, 3] map from image pixels to crop pixels (centres at integers both sides):
    q = (p - center) * size / side + (size - 1) / 2."""
    s = size / side
    return np.array([[s, 0.0, (size - 1) / 2.0 - s * center[0]], [0.0, s, (size - 1) / 2.0 - s * center[1]]])


def crop_image(rgb: np.ndarray, center: np.ndarray, side: float, size: int = CROP) -> np.ndarray:
    """The crop [size, size, 3] (same dtype as rgb) of the square of `side` pixels around `center`;
    outside the image is black. Bilinear; INTER_AREA pre-shrink (to ~1:1) when shrinking more than 2x."""
    m = crop_affine(center, side, size)
    s = size / side
    if s < 0.5:
        h, w = rgb.shape[:2]
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / w, nh / h
        # p_small = (p + 0.5) * f - 0.5  =>  p = (p_small + 0.5) / f - 0.5
        pre = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1.0]])
        m = m @ pre
        rgb = small
    return cv2.warpAffine(
        np.ascontiguousarray(rgb),
        m,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def decode_heatmaps(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[68, H, W] heatmaps -> (points [68, 2] in heatmap pixels (centres at integers), scores [68]).

    Point = argmax, moved 0.25 towards the larger neighbour on each axis when the maximum is not
    on the border (face-alignment's rule); score = the maximum value."""
    n, h, w = hm.shape
    flat = hm.reshape(n, -1)
    idx = flat.argmax(axis=1)
    scores = flat[np.arange(n), idx].astype(np.float32)
    ky, kx = np.divmod(idx, w)
    pts = np.stack([kx, ky], axis=1).astype(np.float64)
    inner = (kx > 0) & (kx < w - 1) & (ky > 0) & (ky < h - 1)
    j = np.nonzero(inner)[0]
    dx = hm[j, ky[j], kx[j] + 1] - hm[j, ky[j], kx[j] - 1]
    dy = hm[j, ky[j] + 1, kx[j]] - hm[j, ky[j] - 1, kx[j]]
    pts[j, 0] += 0.25 * np.sign(dx)
    pts[j, 1] += 0.25 * np.sign(dy)
    return pts, scores


def heatmap_to_image(pts_hm: np.ndarray, center: np.ndarray, side: float) -> np.ndarray:
    """Heatmap pixels [..., 2] -> image pixels (inverse of the crop; cell k covers crop 4k..4k+3)."""
    stride = CROP / HEATMAP
    q = pts_hm * stride + (stride - 1) / 2.0
    return (q - (CROP - 1) / 2.0) * (side / CROP) + np.asarray(center)


@torch.no_grad()
def _heatmaps(detector: LandmarkDetector, crop: np.ndarray) -> np.ndarray:
    """[256, 256, 3] uint8 crop -> [68, 64, 64] float32 heatmaps."""
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float().div(255.0)
    x = x.to(detector.device)
    if detector.flip:
        x = torch.cat([x, x.flip(-1)])
    out = detector.fan(x)
    hm = out[-1] if isinstance(out, (list, tuple)) else out  # [B, 68, 64, 64]
    hm = hm.float()
    if detector.flip:
        hm = (hm[0] + hm[1, _FLIP_PAIRS].flip(-1)) / 2.0
    else:
        hm = hm[0]
    hm = hm.cpu().numpy()
    if hm.shape != (N_LANDMARKS, HEATMAP, HEATMAP):
        raise EnvironmentProblem(f"the landmark network returned heatmaps of shape {hm.shape}, expected (68, 64, 64)")
    return hm


@torch.no_grad()
def heatmaps_batch(detector: LandmarkDetector, crops: np.ndarray) -> np.ndarray:
    """[B, 256, 256, 3] uint8 crops -> [B, 68, 64, 64] float32 heatmaps (one FAN pass for the batch;
    with `flip` the mirrored crops run in the same pass and are averaged as in _heatmaps)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255.0).to(detector.device)
    B = x.shape[0]
    if detector.flip:
        x = torch.cat([x, x.flip(-1)])
    out = detector.fan(x)
    hm = (out[-1] if isinstance(out, (list, tuple)) else out).float()  # [B(*2), 68, 64, 64]
    if detector.flip:
        hm = (hm[:B] + hm[B:, _FLIP_PAIRS].flip(-1)) / 2.0
    hm = hm.cpu().numpy()
    if hm.shape[1:] != (N_LANDMARKS, HEATMAP, HEATMAP):
        raise EnvironmentProblem(
            f"the landmark network returned heatmaps of shape {hm.shape}, expected (B, 68, 64, 64)"
        )
    return hm


# ----------------------------------------------------------------------------------------------
# the stage


def _fan_points(image: LoadedImage, detector: LandmarkDetector, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAN on the crop around `box` (original pixels): points [68, 2] in original pixels, scores [68]."""
    box_work = np.concatenate([image.to_working(box[:2]), image.to_working(box[2:4])])
    center, side = crop_transform(box_work)
    crop = crop_image(image.rgb, center, side)
    pts_hm, scores = decode_heatmaps(_heatmaps(detector, crop))
    return image.to_original(heatmap_to_image(pts_hm, center, side)), scores


def detect_landmarks(
    image: LoadedImage,
    detector,
    *,
    bbox: Sequence[float] | None = None,
    face_index: int | None = None,
) -> Landmarks:
    """68 landmarks of one face, in ORIGINAL image pixels (see the module docstring).

    detector: a LandmarkDetector (FAN) or a landmarks.dlib_detector.DlibDetector (see landmarks.choose).

    bbox: (x0, y0, x1, y1) in original pixels: skip detection and use this box.
    face_index: with several faces, the K-th by box area descending (None: the largest).
    No face -> NoFaceError; K out of range -> InputError."""
    if bbox is not None:
        if face_index is not None:
            raise InputError("give either a bbox or a face index, not both")
        box = check_bbox(bbox, image)
    else:
        faces = detect_faces(image, detector)
        if len(faces) == 0:
            raise NoFaceError(
                "no face found (give the face box with `bbox`, or your own points with `landmarks`)",
                path=image.path,
                mentions=("bbox", "landmarks"),
            )
        k = 0 if face_index is None else int(face_index)
        if k < 0 or k >= len(faces):
            raise InputError(
                f"face_index {k}: {len(faces)} face(s) found, valid indices are 0..{len(faces) - 1} (0 = largest)",
                path=image.path,
                setting="face_index",
            )
        box = faces[k, :4]
    if hasattr(detector, "points"):  # DlibDetector
        pts, scores = detector.points(image, np.asarray(box, dtype=np.float64))
    else:
        pts, scores = _fan_points(image, detector, box)
    if not np.isfinite(pts).all():
        raise EnvironmentProblem("the landmark network produced non-finite points (corrupt weights?)", path=image.path)
    return Landmarks(
        image_size=image.original_size,
        landmarks=pts.astype(np.float32),
        scores=np.nan_to_num(scores, nan=0.0).astype(np.float32),
        bbox=np.asarray(box, dtype=np.float32),
        image_sha256=image.sha256,
        detector=detector.name,
    )


def landmarks_from_points(image: LoadedImage, points: np.ndarray, detector: str = "user-supplied") -> Landmarks:
    """Bring your own: 68 points [68, 2] (x, y) in ORIGINAL image pixels -> Landmarks.

    scores are 1, bbox is the points' bounding box. InputError when the points are not 68
    finite (x, y) pairs, are degenerate, or do not overlap the image."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 3 and p.shape[0] == N_LANDMARKS:
        p = p[:, :2]  # (x, y, z) from a 3D landmark tool: z dropped
    if p.shape != (N_LANDMARKS, 2):
        raise InputError(f"landmarks: expected 68 (x, y) points, got an array of shape {p.shape}", path=image.path)
    if not np.isfinite(p).all():
        raise InputError("landmarks: some points are NaN or infinite", path=image.path)
    x0, y0 = p.min(axis=0)
    x1, y1 = p.max(axis=0)
    h, w = image.original_size
    if not (x1 - x0 >= 2.0 and y1 - y0 >= 2.0):
        raise InputError(
            f"landmarks span {x1 - x0:.3g} x {y1 - y0:.3g} px: expected pixel coordinates of a face (normalised 0..1 points?)",
            path=image.path,
        )
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        raise InputError(f"landmarks lie outside the {w}x{h} image", path=image.path)
    return Landmarks(
        image_size=image.original_size,
        landmarks=p.astype(np.float32),
        scores=np.ones(N_LANDMARKS, dtype=np.float32),
        bbox=np.array([x0, y0, x1, y1], dtype=np.float32),
        image_sha256=image.sha256,
        detector=detector,
    )
