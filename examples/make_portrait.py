"""Write examples/astronaut.png: NASA's portrait of Eileen Collins (public domain),
as shipped by scikit-image (skimage.data.astronaut). Run once:

    python examples/make_portrait.py
"""

from pathlib import Path

from PIL import Image
from skimage import data

out = Path(__file__).with_name("astronaut.png")
Image.fromarray(data.astronaut()).save(out, optimize=True)
print(out)
