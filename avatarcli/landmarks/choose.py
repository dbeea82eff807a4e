"""Which landmark detector a run uses: `--detector auto|fan|dlib`.

  * fan:  face-alignment's 2D FAN (+ S3FD without a box): weights.lock "fan-2d", "s3fd";
  * dlib: dlib's HOG detector + 68-point predictor: "dlib-68" (`pip install 'avatarcli[dlib]'`);
  * auto: FAN when its weights are present, else dlib when installed, else one line (exit 3) naming
    both routes and `--landmarks FILE`.

`detector_models` answers before anything is loaded (batch jobs check every input first);
`load_detector` then loads the chosen one once.
"""

from __future__ import annotations

from typing import Union

from avatarcli.errors import InputError, MissingModelError
from avatarcli.landmarks.detect import LandmarkDetector, load_landmark_detector
from avatarcli.landmarks.dlib_detector import DlibDetector, load_dlib_detector
from avatarcli.weights import resolve

DETECTORS = ("auto", "fan", "dlib")
FAN_MODELS = ("fan-2d", "s3fd")
DLIB_MODELS = ("dlib-68",)
Detector = Union[LandmarkDetector, DlibDetector]  # what load_detector returns


def _present(names: tuple[str, ...]) -> bool:
    try:
        for n in names:
            resolve(n)
    except MissingModelError:
        return False
    return True


def choose_detector(kind: str, need_detector: bool = True) -> str:
    """ "fan" or "dlib" for `kind`; auto with neither available raises MissingModelError (exit 3)."""
    if kind not in DETECTORS:
        raise InputError(f"detector {kind!r}: expected one of {', '.join(DETECTORS)}", setting="detector")
    if kind != "auto":
        return kind
    fan = FAN_MODELS if need_detector else FAN_MODELS[:1]
    if _present(fan):
        return "fan"
    if _present(DLIB_MODELS):
        return "dlib"
    raise MissingModelError(
        "no landmark detector available: run `avatar weights fetch " + " ".join(fan) + "` (FAN) "
        "or `pip install 'avatarcli[dlib]'` (dlib), or give your own points with `landmarks` FILE",
        mentions=("landmarks",),
    )


def detector_models(kind: str, need_detector: bool = True) -> tuple[str, ...]:
    """weights.lock names the chosen detector needs (resolve them to check; see choose_detector)."""
    chosen = choose_detector(kind, need_detector)
    if chosen == "dlib":
        return DLIB_MODELS
    return FAN_MODELS if need_detector else FAN_MODELS[:1]


def load_detector(kind: str, device: str = "auto", need_detector: bool = True, *, flip: bool = False) -> Detector:
    """The chosen detector, loaded: LandmarkDetector (FAN) or DlibDetector. Missing models: exit 3."""
    chosen = choose_detector(kind, need_detector)
    if chosen == "dlib":
        return load_dlib_detector()
    return load_landmark_detector(device, need_detector=need_detector, flip=flip)


__all__ = ["DETECTORS", "Detector", "choose_detector", "detector_models", "load_detector"]
