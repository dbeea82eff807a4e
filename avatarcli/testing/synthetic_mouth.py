"""The synthetic FLAME model with a mouth opening, like the real FLAME's lip slit (for mouth tests).

The plain synthetic head is a closed surface: an opened jaw only stretches it. Here the upper lip's
last ring (43) is moved onto the mouth line (ring 44) across the mouth (|phi| <= 13 degrees): the
triangles between the two rings have zero area, so no Gaussian is seeded on them, and when the jaw
opens the two rings separate (their jaw skinning weights differ): a hole between the lips, as in FLAME.
Same vertex / face counts and landmark embedding as the plain model."""

from __future__ import annotations

import numpy as np
import torch

from avatarcli.flame.embedding import embedding_from_mapping
from avatarcli.flame.model import flame_from_arrays
from avatarcli.testing.synthetic_flame import synthetic_arrays, vertex_id

UPPER_RING, LINE_RING = 43, 44
MOUTH_COLS = np.arange(-3, 4)  # phi = 4.44 degrees x col


def make_synthetic_flame_with_mouth(seed: int = 0, dtype=torch.float32):
    a = synthetic_arrays(seed)
    up, line = vertex_id(UPPER_RING, MOUTH_COLS), vertex_id(LINE_RING, MOUTH_COLS)
    a["v_template"][up] = a["v_template"][line]
    a["shapedirs"][up] = a["shapedirs"][line]  # the slit stays closed for every identity / expression
    a["posedirs"][up] = a["posedirs"][line]
    lm = embedding_from_mapping("<synthetic-mouth>", a.pop("embedding"))
    m = flame_from_arrays("<synthetic-mouth>", a, landmarks=lm, release="unknown")
    return m if dtype == torch.float32 else m.to(dtype=dtype)


def slit_outline(vertices: torch.Tensor) -> torch.Tensor:
    """The opening between the lips on posed vertices [V, 3]: a closed outline [K, 3] (upper edge left
    to right, lower edge back), the inner columns of the slit (its ends stay closed)."""
    cols = MOUTH_COLS[1:-1]
    return torch.cat([vertices[vertex_id(UPPER_RING, cols)], vertices[vertex_id(LINE_RING, cols[::-1].copy())]])
