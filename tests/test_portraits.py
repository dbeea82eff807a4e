"""The real-portrait fixtures: present, small, and their outlines match the hand-drawn polygons."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from avatarcli.testing.portraits import FIXTURES, PORTRAITS, portrait, portraits
from tests.fixtures.portraits import make_portraits


def test_every_portrait_has_a_plausible_outline():
    assert len(portraits()) >= 3
    for p in portraits():
        rgb, head = p.rgb(), p.outline()
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert head.shape == rgb.shape[:2], p.name
        assert max(head.shape) <= 512
        assert 0.05 < head.mean() < 0.6, p.name  # a head, not a speck or the whole frame
        _, n = ndimage.label(head)
        assert n == 1, f"{p.name}: outline in {n} pieces"
        assert p.image_path.stat().st_size < 1_000_000 and p.outline_path.stat().st_size < 100_000


def test_outlines_are_the_polygons_in_make_portraits():
    for name in PORTRAITS:
        p = portrait(name)
        mask = Image.new("L", p.rgb().shape[1::-1], 0)
        ImageDraw.Draw(mask).polygon(make_portraits.polygon(name), fill=255)
        np.testing.assert_array_equal(np.asarray(mask) > 127, p.outline(), err_msg=name)


def test_sources_name_every_portrait():
    text = (FIXTURES / "SOURCES.md").read_text()
    for name in PORTRAITS:
        assert name in text
    assert "licence" in text


def test_unknown_portrait():
    with pytest.raises(KeyError, match="known"):
        portrait("nobody")
