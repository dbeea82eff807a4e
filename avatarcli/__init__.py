"""avatarcli: one photo of a face in, one animatable 3D Gaussian head out.

Every stage is a plain function importable from its subpackage; the `avatar`
command line (avatarcli.cli) only parses arguments, loads and saves artifacts
and shows progress.
"""

import os

__version__ = "0.1.0"

# torch's OpenMP threads sleep instead of spinning while they wait (read when torch loads, so set here, before
# any torch import; a value the user set wins). On a shared 2-core machine two spinning threads cost ~3x the CPU
# time of one thread for the same render and are slower in wall time too; passive ones cost the same as one
# (python bench/bench_render.py --only threads, with and without OMP_WAIT_POLICY=PASSIVE). The thread count
# stays torch's: OMP_NUM_THREADS when set, else one per core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
