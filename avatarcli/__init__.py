"""avatarcli: one photo of a face in, one animatable 3D Gaussian head out.

Every stage is a plain function importable from its subpackage; the `avatar`
command line (avatarcli.cli) only parses arguments, loads and saves artifacts
and shows progress.
"""

__version__ = "0.1.0"
