"""The unit that travels through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(slots=True)
class Picture:
    """One progressive picture.

    Attributes:
        rgb: H x W x 3 uint8, full-range RGB (converted from the source's
            matrix and range when it was decoded).
        time: presentation time in seconds on the source's clock (the
            container's own timestamps, not rebased to zero).
        index: position in output order within the chosen range, from 0.
    """

    rgb: np.ndarray
    time: Fraction
    index: int
