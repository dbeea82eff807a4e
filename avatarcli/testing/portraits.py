"""Real portraits with hand-drawn head outlines, for tests and benches (a source checkout only).

The photos live in `tests/fixtures/portraits/` (`examples/astronaut.png` is one of them), each with
`<name>.outline.png` (white = head: face, hair, ears, neck down to the collar; a worn hat counts as head),
drawn by hand as polygons in `tests/fixtures/portraits/make_portraits.py`. Origins and licences:
`tests/fixtures/portraits/SOURCES.md`. They are not part of the installed package.

    from avatarcli.testing.portraits import portrait, portraits
    p = portrait("astronaut")
    rgb = p.rgb()        # [H, W, 3] uint8
    head = p.outline()   # [H, W] bool
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "portraits"
EXAMPLES = REPO / "examples"

# name -> what it exercises (the bench prints this).
PORTRAITS: dict[str, str] = {
    "astronaut": "frontal, short hair, high collar",
    "grace_hopper": "frontal, hat, short grey hair, glasses",
    "obama_turned": "turned ~25 deg, short hair, one ear",
    "einstein": "slightly turned, long wild hair, grayscale",
    "long_hair": "long straight hair to the frame edge, crown cut by the frame, dark backdrop",
}


@dataclass(frozen=True)
class Portrait:
    name: str
    image_path: Path  # the photo
    outline_path: Path  # its hand-drawn head outline (white = head)
    note: str

    def rgb(self) -> np.ndarray:
        """[H, W, 3] uint8 (grayscale photos replicated to RGB)."""
        with Image.open(self.image_path) as im:
            return np.asarray(im.convert("RGB"))

    def outline(self) -> np.ndarray:
        """[H, W] bool, True = head."""
        with Image.open(self.outline_path) as im:
            return np.asarray(im.convert("L")) > 127


def _image_path(name: str) -> Path:
    if name == "astronaut":
        return EXAMPLES / "astronaut.png"
    return FIXTURES / f"{name}.jpg"


def portrait(name: str) -> Portrait:
    """One portrait by name (see PORTRAITS); FileNotFoundError outside a source checkout."""
    if name not in PORTRAITS:
        raise KeyError(f"unknown portrait {name!r}; known: {', '.join(PORTRAITS)}")
    p = Portrait(name, _image_path(name), FIXTURES / f"{name}.outline.png", PORTRAITS[name])
    for f in (p.image_path, p.outline_path):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: portrait fixtures exist only in a source checkout of avatarcli")
    return p


def portraits() -> list[Portrait]:
    """All portraits, in PORTRAITS order."""
    return [portrait(n) for n in PORTRAITS]


__all__ = ["PORTRAITS", "Portrait", "portrait", "portraits"]
