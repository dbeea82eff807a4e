"""The head region of a photo (face, hair, ears, neck down to the collar) without downloaded weights.

Order of sources (`choose_head_region`): the face-parsing model's mask when the features carry one;
else the user's matte (`--mask FILE`, white = head); else `segment_head`, a classical segmentation
seeded from what the pipeline already knows:

  * sure head: the face inside the 68 landmarks (their hull, shrunk a little), a band of forehead
    above the brows, and the skull above it between the eyes' outer corners up to `crown_sure` face
    heights (hair, a hat or a bald scalp; on an upright head never backdrop);
  * probably head: the fitted FLAME mesh's projection when given (skull, ears, neck), and an ellipse
    around the face sized from the landmarks that reaches the crown, where hair is; it is centred on
    the skull (the jaw's middle, moved away from the nose of a turned face), not on the nose;
  * sure background: the image border and everything far from the face (beside it by more than one
    face width, above the crown, below the collar: more than NECK_DROP face heights below the chin);
  * probably background: the rest.

OpenCV's GrabCut (colour GMMs + graph cut) then labels the pixels. Below the jaw line only what is
head there stays (`_below_jaw_head`): skin, and below the chin only within the neck's width (a collar
or a skin-coloured neckline is wider) and above the first strong brightness edge under the jaw
(`_collar_rows`: the collar's line, which stops the neck where a grey photo's white collar reads as
skin), so the neck stops at the collar; beside the jaw's lower half, above the chin and near the face,
GrabCut's head (hair and ear lobes behind the jaw); and long hair: pixels coloured like both the hair
beside the cheeks and the hair on top, connected to hair that frames the jaw on both sides (a flag
stripe beside one cheek or a jacket coloured like the hair is not long hair). Thin strands are opened
away and the connected piece that holds the face is kept with holes filled. The cut is then refined by
closed-form matting in a band around it, above the jaw and around long hair below it (wisps of hair
mixed with the backdrop, which GrabCut's colour models drop). Everything runs on copies with a long
side of `work_sides` px (a second or two on one core), one vote each, scaled back; the majority is the
region.

The majority grows by `margin_frac` face widths (a missed head pixel costs more than a band of
backdrop), less the backdrop the cut took in along a clean edge (`_backdrop_edge`: local colour means
either side of the edge band). Below the brows a last closed-form matte across the final edge
(`_edge_matte`) takes back what the rules cut along it (the shadowed neck behind the jaw, an ear's
rim, hair behind an ear) where its colour is the head's, not the backdrop's: it only adds pixels.
Share of the drawn outline missed, before / after it: grace_hopper 0.032 / 0.023, obama_turned
0.019 / 0.016, einstein 0.061 / 0.054, long_hair 0.051 / 0.043, astronaut 0.003 / 0.003 (IoU
0.905 / 0.909, 0.942 / 0.943, 0.901 / 0.903, 0.931 / 0.937, 0.934 / 0.931). A wider band (0.06)
takes more back (obama 0.015) and more backdrop (grace's render spill 0.0796 against the 0.08
target; a grey and red sliver of backdrop beside obama's left jaw, 172 px outside the drawn outline
there, 123 at 0.05). Measured (IoU with the drawn outlines of tests/fixtures/portraits, dlib
landmarks, `python bench/bench_real.py --out DIR --region-only`; before the collar edge, the beside-jaw
and edge-band rules / now; grace_hopper against its second drawing, which takes in the hat's left side,
hair and both ears): astronaut 0.930 / 0.934, grace_hopper 0.904 / 0.905 (0.874 against the first
drawing), obama_turned 0.933 / 0.942 (region spill 0.051 / 0.041 at coverage 0.982 / 0.981), einstein
0.882 / 0.901, long_hair 0.932 / 0.931. Known misses: grace_hopper's white hat top against white flag
stripes, the shadowed flag strip between her hat and a flag cord, grey hair behind her jaw; einstein's
wisps at his hair's edge and his neck in shadow; long hair more than 0.45 face heights under the chin
(sure background there: the clothing's colour model).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from avatarcli.errors import InputError
from avatarcli.io.atomic import atomic_write_bytes
from avatarcli.segment.foreground import nearer_head, torch_threads_kept

WORK_SIDES = (288, 320, 360)  # px: GrabCut's working resolutions (long side), one vote each
HEAD_SHIFT = 0.25  # the skull's centre sits this fraction of the nose's offset from the jaw's middle behind it


@dataclass(frozen=True)
class RegionConfig:
    work_sides: tuple[int, ...] = WORK_SIDES
    iterations: int = 5  # GrabCut iterations
    side_reach: float = 0.5  # sure background beyond this many face widths left/right of the face
    crown_reach: float = 1.1  # ... above the brows by more than this many face heights
    neck_drop: float = 0.45  # ... below the chin by more than this many face heights (the collar)
    ellipse_scale: float = 1.0  # the "probably head" ellipse around face + hair
    crown_sure: float = 0.3  # sure head up to this many face heights above the brows (between the eyes' outer corners)
    matte_in: float = 0.03  # hair matting (see _matte_hair): sure head this many face widths inside GrabCut's cut
    matte_out: float = 0.2  # ... the band solved reaches this far outside it (0: no matting)
    # the region grows by this many face widths at the end: a head pixel left out costs the fit that
    # pixel (the render shows background there: 3 % of a dark head missed caps the head-region PSNR near
    # 20 dB), a band of backdrop taken in only costs spill, and the edge colours (segment/foreground.py)
    # take the backdrop out of the band
    margin_frac: float = 0.015
    # ... and the backdrop the cut took in goes (_backdrop_edge): a pixel of the edge band (the margin and
    # as wide inside the cut) whose colour is nearer the backdrop's just outside (Lab, mean over
    # `edge_sigma` margins) than the head's just inside by the factor `edge_ratio` is left out where
    # `edge_share` of the band nearby is so too (the gaps between wisps alone are not; 0: off)
    edge_ratio: float = 1.5
    edge_sigma: float = 3.0
    edge_share: float = 0.75
    open_frac: float = 0.015  # strands thinner than 2x this many face widths are cut off
    border_px: int = 2  # sure-background band along the image border (work px)
    skin_sigma: float = 3.0  # below the jaw only skin is head: Mahalanobis distance (Lab) to the face's skin
    hair_sigma: float = 2.5  # ... and hair: distance to the hair beside the cheeks
    hair_gap: float = 0.05  # that hair sample keeps this many face widths off the landmarks' hull
    hair_min: float = 0.003  # long hair only when that sample holds this many face widths squared
    neck_points: tuple[int, int] = (5, 11)  # below the chin, skin is neck only between these jaw points' x
    # the neck stops at the first strong edge below the jaw (the collar's line; in a grey photo a white
    # collar reads as skin): per column, the first pixel `collar_gap` face heights or more below the jaw
    # line whose brightness gradient exceeds `collar_edge` x the face's (75th percentile over its skin)
    collar_gap: float = 0.04
    collar_edge: float = 3.0
    collar_floor: float = 10.0  # ... and at least this (L, 0..255, per px): sensor noise on a flat face is no edge
    jaw_band: float = 0.1  # below-jaw pieces must touch this many face heights just above the jaw line
    # beside the jaw's lower half (outside the x-span of jaw points 2..14) and above the chin, GrabCut's
    # head stays (hair and ear lobes behind the jaw) ...
    beside_reach: float = 0.1  # ... within this many face widths of the landmarks' hull (0: off)
    # below the brows the final edge is refined outward by closed-form matting (_edge_matte): sure head
    # `edge_in` face widths inside the region, the band up to `edge_out` outside it solved; a pixel there
    # joins when its alpha > 0.5 and its colour (Lab) is nearer a sure-head pixel than a pixel beyond the
    # band (the shadowed neck behind the jaw, an ear's rim, hair behind the ear that the rules below the
    # jaw and GrabCut cut off; above the brows _matte_hair has matted the crown already; 0: off)
    edge_in: float = 0.01
    edge_out: float = 0.05


@dataclass
class HeadRegion:
    mask: np.ndarray  # [H, W] float32 0..1, 1 = head
    source: str  # "face-parsing" | "user" | "grabcut"


def _face_geometry(lm: np.ndarray) -> dict[str, float]:
    """Sizes from the 68 iBUG points [68, 2] (x, y): face width, face height, brow line, chin, centre x."""
    jaw, brows = lm[0:17], lm[17:27]
    width = float(np.linalg.norm(jaw[16] - jaw[0]))
    brow_y = float(brows[:, 1].mean())
    chin_y = float(jaw[8, 1])
    height = max(chin_y - brow_y, 1.0) * 1.5  # brow-to-chin is ~2/3 of hairline-to-chin
    # the skull's centre: the jaw's ends' midpoint, moved away from the nose of a turned face (the back
    # of the head shows on the far side); centring on the nose would cut a turned head's back off
    mid, nose = float(jaw[[0, 16], 0].mean()), float(lm[27:31, 0].mean())
    cx = mid - HEAD_SHIFT * (nose - mid)
    return {"w": max(width, 1.0), "h": height, "brow_y": brow_y, "chin_y": chin_y, "cx": cx}


def _seed_labels(shape: tuple[int, int], lm: np.ndarray, prior: np.ndarray | None, cfg: RegionConfig) -> np.ndarray:
    """[h, w] uint8 GrabCut labels (cv2.GC_BGD / GC_FGD / GC_PR_BGD / GC_PR_FGD) at the work size."""
    h, w = shape
    g = _face_geometry(lm)
    lab = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    # probably head: an ellipse from below the chin to the crown, a little wider than the jaw
    top = g["brow_y"] - 0.75 * g["h"]
    bottom = g["chin_y"] + 0.25 * g["h"]
    centre = (int(round(g["cx"])), int(round((top + bottom) / 2)))
    axes = (int(round(0.75 * g["w"] * cfg.ellipse_scale)), int(round((bottom - top) / 2 * cfg.ellipse_scale)))
    cv2.ellipse(lab, centre, axes, 0, 0, 360, int(cv2.GC_PR_FGD), -1)
    if prior is not None:
        lab[prior] = cv2.GC_PR_FGD
    # sure background: far beside, above, below (the collar), and the border
    yy, xx = np.mgrid[0:h, 0:w]
    far = (np.abs(xx - g["cx"]) > (0.5 + cfg.side_reach) * g["w"]) | (yy < g["brow_y"] - cfg.crown_reach * g["h"])
    far |= yy > g["chin_y"] + cfg.neck_drop * g["h"]
    lab[far] = cv2.GC_BGD
    b = cfg.border_px
    lab[:b], lab[-b:], lab[:, :b], lab[:, -b:] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
    # sure head: the landmarks' hull shrunk towards its centre, and a forehead band above the brows
    hull = cv2.convexHull(lm.astype(np.float32)).reshape(-1, 2)
    c = hull.mean(0)
    cv2.fillPoly(lab, [np.round(c + 0.85 * (hull - c)).astype(np.int32)], int(cv2.GC_FGD))
    brows = lm[17:27]
    band = np.concatenate([brows, brows[::-1] - [0, 0.15 * g["h"]]]).astype(np.int32)
    cv2.fillPoly(lab, [band], int(cv2.GC_FGD))
    # sure head: the skull above the forehead, between the outer eye corners, up to crown_sure face
    # heights above the brows (hair, a hat or a bald scalp: never backdrop on an upright head)
    x0, x1 = sorted((float(lm[36, 0]), float(lm[45, 0])))
    y1 = float(brows[:, 1].min())
    cv2.rectangle(
        lab,
        (int(round(x0)), int(round(g["brow_y"] - cfg.crown_sure * g["h"]))),
        (int(round(x1)), int(round(y1))),
        int(cv2.GC_FGD),
        -1,
    )
    return lab


def _skin_distance(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """[h, w] Mahalanobis distance (CIE Lab) of every pixel to the skin of the face: pixels inside the
    landmark hull, without the eyes, brows and mouth."""
    h, w = img.shape[:2]
    face = np.zeros((h, w), np.uint8)
    cv2.fillPoly(face, [cv2.convexHull(lm[:17].astype(np.float32)).astype(np.int32).reshape(-1, 2)], 1)
    for part in (lm[17:22], lm[22:27], lm[36:42], lm[42:48], lm[48:60]):
        hull = cv2.convexHull(part.astype(np.float32)).astype(np.int32).reshape(-1, 2)
        cv2.fillPoly(face, [hull], 0)
        cv2.polylines(face, [hull], True, 0, thickness=max(1, int(round(h / 150))))
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    sk = lab[face.reshape(-1) > 0]
    if len(sk) < 10:
        return np.zeros((h, w))
    mu, cov = sk.mean(0), np.cov(sk.T) + np.eye(3) * 4.0  # +4: a little slack (grey photos have flat a, b)
    d = lab - mu
    return np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)).reshape(h, w)


def _below_jaw(shape: tuple[int, int], lm: np.ndarray, lift: float = 0.0) -> np.ndarray:
    """[h, w] bool: pixels below the jaw line (iBUG 2..14) lifted by `lift` px, continued flat beyond its ends."""
    h, w = shape
    jaw = lm[2:15]
    xs = np.arange(w)
    order = np.argsort(jaw[:, 0])
    ys = np.interp(xs, jaw[order, 0], jaw[order, 1]) - lift  # flat beyond the ends
    return np.arange(h)[:, None] > ys[None, :]


def _collar_rows(img: np.ndarray, lm: np.ndarray, skin: np.ndarray, cfg: RegionConfig) -> np.ndarray:
    """[w] float: per column, the row where the neck stops: the first strong brightness edge at least
    `collar_gap` face heights below the jaw line (a collar, a neckline; a grey photo's white collar that
    reads as skin), median-filtered over a tenth of the face width; the image height where none is found.
    skin [h, w] bool: the face's skin (the edge scale is its 75th-percentile gradient)."""
    h, w = skin.shape
    g = _face_geometry(lm)
    L = cv2.GaussianBlur(
        cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32), (0, 0), max(1.0, g["w"] / 100)
    )
    mag = np.hypot(cv2.Sobel(L, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(L, cv2.CV_32F, 0, 1, ksize=3)) / 8  # [h, w]
    hull = np.zeros((h, w), np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(lm.astype(np.float32)).astype(np.int32).reshape(-1, 2)], 1)
    face = (hull > 0) & skin
    ref = float(np.percentile(mag[face], 75)) if face.sum() >= 20 else 0.0
    edge = _below_jaw((h, w), lm, lift=-cfg.collar_gap * g["h"]) & (mag > max(cfg.collar_edge * ref, cfg.collar_floor))
    rows = np.where(edge.any(0), edge.argmax(0), h).astype(np.float64)  # [w] the first edge row per column
    k = max(1, round(0.05 * g["w"]))
    return np.asarray(ndimage.median_filter(rows, size=2 * k + 1, mode="nearest"), np.float64)


def _grown_from(cand: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """[h, w] bool: the pixels of `cand` in 4-connected pieces of (cand | seed) that hold a seed pixel."""
    n, comp = cv2.connectedComponents((cand | seed).astype(np.uint8), connectivity=4)
    keep = np.zeros(n, bool)
    keep[np.unique(comp[seed])] = True
    keep[0] = False
    return cand & keep[comp]


def _mahalanobis(lab: np.ndarray, sample: np.ndarray, slack: float = 4.0) -> np.ndarray | None:
    """[N] distance of Lab pixels [N, 3] to the Gaussian of `sample` [M, 3] (None when M < 20)."""
    if len(sample) < 20:
        return None
    mu, cov = sample.mean(0), np.cov(sample.T) + np.eye(3) * slack
    d = lab - mu
    return np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d))


def _below_jaw_head(
    img: np.ndarray, fg: np.ndarray, lm: np.ndarray, cfg: RegionConfig
) -> tuple[np.ndarray, np.ndarray]:
    """GrabCut's head [h, w] bool with what lies below the jaw line narrowed to what is head there:
    * the neck: skin-coloured (see _skin_distance), between the jaw's points 5 and 11 (a neck is
      narrower than the jaw; a collar is wider), connected to the face across the jaw line; it stops
      where the clothing starts (the collar);
    * long hair: pixels coloured like the hair beside the cheeks (GrabCut's head pixels above the jaw
      line, beside the landmarks, that are not skin) and connected to that hair across the jaw line.
    Everything else below the jaw (clothing, a backdrop GrabCut took in) is dropped.
    -> (the head [h, w] bool, the long hair below the jaw [h, w] bool)."""
    h, w = fg.shape
    g = _face_geometry(lm)
    below = _below_jaw((h, w), lm)
    band = ~below & _below_jaw((h, w), lm, lift=cfg.jaw_band * g["h"])  # just above the jaw line
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    skin = _skin_distance(img, lm) <= cfg.skin_sigma  # [h, w]
    x0, x1 = sorted((float(lm[cfg.neck_points[0], 0]), float(lm[cfg.neck_points[1], 0])))
    outside = ((np.arange(w) < x0) | (np.arange(w) > x1))[None, :] & (np.arange(h) > g["chin_y"])[:, None]
    neck = below & fg & skin & ~outside  # below the chin a neck is narrower than the jaw, a collar wider
    neck &= np.arange(h)[:, None] < _collar_rows(img, lm, skin, cfg)[None, :]  # ... and ends at the collar's edge
    hull = np.zeros((h, w), np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(lm.astype(np.float32)).astype(np.int32).reshape(-1, 2)], 1)
    r = max(1, round(cfg.hair_gap * g["w"]))
    face = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0
    yy = np.arange(h)[:, None]
    hairy = fg & ~below & ~face & ~skin  # GrabCut's head beside and above the face that is not skin
    beside = hairy & (yy > float(lm[36:48, 1].mean()))  # beside the cheeks
    crown = hairy & (yy < g["brow_y"])  # around the forehead and above
    d_side, d_crown = _mahalanobis(lab, lab[beside.reshape(-1)]), _mahalanobis(lab, lab[crown.reshape(-1)])
    hair = np.zeros((h, w), bool)
    if d_side is not None and d_crown is not None:  # hair both beside the cheeks and on top: long hair
        like = fg & (d_side.reshape(h, w) <= cfg.hair_sigma) & (d_crown.reshape(h, w) <= cfg.hair_sigma)
        ring = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * r + 1,) * 2)) > 0
        seed = band & like & ring & ~face  # hair that frames the jaw ...
        left = seed[:, : int(round(lm[8, 0]))].sum()
        if min(left, seed.sum() - left) >= cfg.hair_min * g["w"] ** 2:  # ... on both sides: long hair
            hair = _grown_from(below & like, seed)
    keep = neck | hair
    if cfg.beside_reach > 0:  # beside the jaw, above the chin: hair and ear lobes behind the jaw
        xs = np.arange(w)[None, :]
        span = (xs < min(lm[2, 0], lm[14, 0])) | (xs > max(lm[2, 0], lm[14, 0]))
        rb = max(1, round(cfg.beside_reach * g["w"]))
        near = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rb + 1,) * 2)) > 0
        keep |= fg & span & near & (yy < g["chin_y"])
    return np.where(below, keep, fg), hair


def _clean(fg: np.ndarray, lm: np.ndarray, open_px: int) -> np.ndarray:
    """The connected piece holding the face (nose tip), thin strands cut off (an opening with a disc of
    radius `open_px`: flag cords, a pole, a strand of backdrop), holes filled: [h, w] bool."""
    r = max(1, int(open_px))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, disc) > 0
    n, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=4)
    x, y = np.clip(np.round(lm[30]).astype(int), 0, [fg.shape[1] - 1, fg.shape[0] - 1])
    keep = comp == comp[y, x] if comp[y, x] > 0 else fg
    return ndimage.binary_fill_holes(keep)


def _grabcut(img: np.ndarray, lab: np.ndarray, iterations: int) -> np.ndarray:
    """[h, w] bool foreground of OpenCV's GrabCut from seed labels [h, w] (fixed RNG seed)."""
    lab = lab.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), lab, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]  # rect unused with a mask
    return (lab == cv2.GC_FGD) | (lab == cv2.GC_PR_FGD)


def _matte_hair(
    img: np.ndarray, fg: np.ndarray, lm: np.ndarray, cfg: RegionConfig, hair_below: np.ndarray | None = None
) -> np.ndarray:
    """GrabCut's hard cut refined above the jaw by closed-form matting (Levin et al. 2008, pymatting's
    estimate_alpha_cf): its foreground eroded by `matte_in` face widths is sure head, everything beyond
    `matte_out` face widths outside it (and everything below the jaw) keeps GrabCut's label, the band
    between is solved for alpha; alpha > 0.5 is head. Wisps of hair that mix with the backdrop (a grey
    halo over a dark hall) are what GrabCut's colour models drop and the matte's local colour lines keep.
    [h, w] bool -> [h, w] bool."""
    fw = _face_geometry(lm)["w"]
    r_in, r_out = max(1, round(cfg.matte_in * fw)), max(1, round(cfg.matte_out * fw))
    u8 = fg.astype(np.uint8)
    sure = cv2.erode(u8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_in + 1,) * 2)) > 0
    near = cv2.dilate(u8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_out + 1,) * 2)) > 0
    solve = ~_below_jaw(fg.shape, lm)  # above the jaw, and around long hair below it
    if hair_below is not None and hair_below.any():
        solve |= (
            cv2.dilate(hair_below.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_out + 1,) * 2))
            > 0
        )
    unknown = near & ~sure & solve
    if not unknown.any() or not sure.any():
        return fg
    trimap = fg.astype(np.float64)  # [h, w] 1 head, 0 not, 0.5 to solve
    trimap[unknown] = 0.5
    with torch_threads_kept():
        from pymatting import estimate_alpha_cf

        alpha = estimate_alpha_cf(img.astype(np.float64) / 255.0, trimap)  # [h, w]
    return np.where(unknown, alpha > 0.5, fg)


def _segment_at(
    rgb: np.ndarray, landmarks: np.ndarray, prior: np.ndarray | None, cfg: RegionConfig, side: int
) -> np.ndarray:
    """[H, W] float32 0..1: one segmentation on a copy with a long side of at most `side` px, scaled back."""
    H, W = rgb.shape[:2]
    s = min(1.0, side / max(H, W))
    w, h = max(1, round(W * s)), max(1, round(H * s))
    img = cv2.resize(np.ascontiguousarray(rgb), (w, h), interpolation=cv2.INTER_AREA) if s < 1 else rgb.copy()
    lm = (np.asarray(landmarks, np.float64) + 0.5) * [w / W, h / H] - 0.5
    pri = None
    if prior is not None:
        pri = cv2.resize(np.asarray(prior, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    fg = _grabcut(img, _seed_labels((h, w), lm, pri, cfg), cfg.iterations)
    fg, hair_below = _below_jaw_head(img, fg, lm, cfg)  # the neck stops at the collar; long hair goes on
    open_px = round(cfg.open_frac * _face_geometry(lm)["w"])
    fg = _clean(fg, lm, open_px)
    if cfg.matte_out > 0:
        fg = _clean(_matte_hair(img, fg, lm, cfg, hair_below & fg), lm, open_px)
    mask = fg.astype(np.float32)
    if s < 1:
        mask = cv2.resize(mask, (W, H), interpolation=cv2.INTER_LINEAR)  # type: ignore[assignment]  # float32 in, float32 out
    return mask


def segment_head(
    rgb: np.ndarray,  # [H, W, 3] uint8
    landmarks: np.ndarray,  # [68, 2] (x, y) in rgb's pixels
    prior: np.ndarray | None = None,  # [H, W] bool: the fitted FLAME mesh's projection (optional)
    cfg: RegionConfig = RegionConfig(),
) -> np.ndarray:
    """[H, W] float32 0/1 head region of a portrait (see the module docstring). Deterministic.

    GrabCut's cut can flip where head and backdrop share colours (a red flag stripe beside a face, a
    white cap band against white stars), and which way it flips depends on the pixel grid: one vote
    per working size in cfg.work_sides, the majority kept."""
    votes = [_segment_at(rgb, landmarks, prior, cfg, side) for side in cfg.work_sides]  # each [H, W]
    mask = (np.mean(votes, axis=0) > 0.5).astype(np.uint8)
    r = round(cfg.margin_frac * _face_geometry(np.asarray(landmarks, np.float64))["w"])
    if r > 0:  # err on the head's side: see RegionConfig.margin_frac
        grown = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        if cfg.edge_ratio > 0:
            grown = grown & ~_backdrop_edge(rgb, mask > 0, grown, r, cfg)
        mask = grown.astype(np.uint8)
    if cfg.edge_out > 0:
        mask = _edge_matte(rgb, mask > 0, np.asarray(landmarks, np.float64), cfg).astype(np.uint8)
    return mask.astype(np.float32)


def _edge_matte(rgb: np.ndarray, mask: np.ndarray, lm: np.ndarray, cfg: RegionConfig) -> np.ndarray:
    """The region [H, W] bool grown below the brows by what a closed-form matte (pymatting's
    estimate_alpha_cf) across its edge calls head (RegionConfig.edge_in / edge_out): trimap head =
    the region eroded by edge_in face widths, unknown = up to edge_out outside it; a pixel outside the
    region joins when its alpha > 0.5 and its Lab colour is nearer a sure-head pixel than a pixel beyond
    the band (foreground.nearer_head, within 2 x the band). Only adds: the region's own pixels all stay."""
    g = _face_geometry(lm)
    r_in, r_out = max(1, round(cfg.edge_in * g["w"])), max(1, round(cfg.edge_out * g["w"]))
    u8 = mask.astype(np.uint8)
    sure = cv2.erode(u8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_in + 1,) * 2)) > 0
    near = cv2.dilate(u8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_out + 1,) * 2)) > 0
    if not sure.any() or near.all():
        return mask
    trimap = np.where(sure, 1.0, np.where(near, 0.5, 0.0))  # [H, W]
    with torch_threads_kept():
        from pymatting import estimate_alpha_cf

        alpha = estimate_alpha_cf(rgb.astype(np.float64) / 255.0, trimap)  # [H, W]
    cand = near & ~mask & (alpha > 0.5) & (np.arange(mask.shape[0])[:, None] > g["brow_y"])
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # [H, W, 3]
    return mask | nearer_head(lab, cand, sure, ~near, 2 * r_out)


def _backdrop_edge(rgb: np.ndarray, mask: np.ndarray, grown: np.ndarray, r: int, cfg: RegionConfig) -> np.ndarray:
    """[H, W] bool: pixels of the edge band (grown [H, W] bool less mask eroded by r px) whose colour is
    nearer the mean colour of the backdrop just outside `grown` than of the head just inside the band,
    by the factor cfg.edge_ratio (Lab; local means: Gaussian windows of cfg.edge_sigma x r px), where
    cfg.edge_share of the band nearby is so too. A cut that took in a strip of backdrop beside the hair
    (a blue backdrop over a dark crown) loses it with the margin over it; where the cut sits on the head's
    edge, the inner half of the band is head and the margin stays (see margin_frac), and so do the gaps
    between wisps mixed with the backdrop."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    inner = cv2.erode(mask.astype(np.uint8), disc) > 0
    band = grown & ~inner
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # [H, W, 3]
    sig = cfg.edge_sigma * r

    def local_mean(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wgt = cv2.GaussianBlur(sel.astype(np.float32), (0, 0), sig)  # [H, W]
        num = cv2.GaussianBlur(lab * sel[..., None].astype(np.float32), (0, 0), sig)  # [H, W, 3]
        return num / np.maximum(wgt, 1e-6)[..., None], wgt

    m_in, w_in = local_mean(inner)
    m_out, w_out = local_mean(~grown)
    d_in = np.linalg.norm(lab - m_in, axis=-1)
    d_out = np.linalg.norm(lab - m_out, axis=-1)
    known = (w_in > 0.05) & (w_out > 0.05)  # both sides present nearby
    drop = band & known & (d_in > cfg.edge_ratio * d_out)
    if cfg.edge_share <= 0:
        return drop
    share = cv2.GaussianBlur(drop.astype(np.float32), (0, 0), sig) / np.maximum(
        cv2.GaussianBlur(band.astype(np.float32), (0, 0), sig), 1e-6
    )
    return drop & (share >= cfg.edge_share)


def write_region(path, mask: np.ndarray) -> None:
    """The region as an 8-bit grey PNG (white = head), written atomically."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(np.asarray(mask, np.float32), 0, 1) * 255).round().astype(np.uint8)).save(buf, "PNG")
    atomic_write_bytes(path, buf.getvalue())


def read_region(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A matte (any image; grey level / 255, white = head) -> [H, W] float32 0..1, resized (bilinear)
    to `size` (H, W) when given. InputError when unreadable or empty."""
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            m = np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise InputError("head-region mask not found", path=path) from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read the head-region mask ({type(e).__name__})", path=path) from None
    if not (m > 0.5).any():
        raise InputError("the head-region mask is empty (white = head)", path=path)
    return m


def features_mask(features, size: tuple[int, int]) -> torch.Tensor:
    """Face-parsing regions (face, hair, neck) of the features (avatarcli.diffusion.features.Features)
    -> float [h, w, 1] at `size` (nearest)."""
    m = torch.from_numpy(np.asarray(features.mask_image) != 0).float()[None, None]  # [1, 1, H, W]
    if tuple(m.shape[-2:]) != tuple(size):
        m = torch.nn.functional.interpolate(m, size=tuple(size), mode="nearest")
    return m[0].permute(1, 2, 0).contiguous()


def choose_head_region(
    rgb: np.ndarray,  # [H, W, 3] uint8 (the working photo)
    landmarks: np.ndarray,  # [68, 2] in rgb's pixels
    *,
    features=None,  # avatarcli.diffusion.features.Features with a face-parsing mask, or None
    user_mask=None,  # path of the user's matte, or None
    prior: np.ndarray | None = None,
    cfg: RegionConfig = RegionConfig(),
) -> HeadRegion:
    """The head region by the module's order: face-parsing, else the user's matte, else segment_head."""
    H, W = rgb.shape[:2]
    if features is not None and getattr(features, "mask_image", None) is not None:
        return HeadRegion(features_mask(features, (H, W))[..., 0].numpy().astype(np.float32), "face-parsing")
    if user_mask is not None:
        return HeadRegion(read_region(user_mask, (H, W)), "user")
    return HeadRegion(segment_head(rgb, landmarks, prior, cfg), "grabcut")


__all__ = [
    "RegionConfig",
    "HeadRegion",
    "segment_head",
    "features_mask",
    "choose_head_region",
    "read_region",
    "write_region",
]
