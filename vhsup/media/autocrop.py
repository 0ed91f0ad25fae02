"""Auto-crop (``--crop auto``): pictures sampled across a file, borders measured.

The measuring is :func:`vhsup.media.geometry.detect_crop`'s; this module
decides which pictures it sees.
"""

from __future__ import annotations

import os

import numpy as np

from vhsup.media.colour import source_colour
from vhsup.media.decode import open_input, video_frames
from vhsup.media.filters import pictures
from vhsup.media.geometry import Crop, detect_crop
from vhsup.media.probe import VideoInfo

# Head-switching noise is a VHS (analogue capture) trait; DVDs and digital files don't have it.
_DIGITAL_CODECS = ("mpeg2video", "h264", "hevc", "vc1")


def auto_crop(path: str | os.PathLike[str], info: VideoInfo) -> Crop:
    """Sample frames across the file and measure borders.

    The frames are measured as decoded, not deinterlaced: a deinterlacer
    fills every other line by interpolation, which smears a border line
    into its picture neighbour, and the crop's lines are the same either way.
    """
    colour = source_colour(info.height, info.colorspace, info.color_range)
    samples: list[np.ndarray] = []
    span = info.duration or 0
    points = [info.start_time + span * k / 8 for k in range(1, 8)] if span > 8 else [None]
    container = open_input(path)
    try:
        for point in points:
            frames = video_frames(container, start=point, preroll=0.0)
            got = 0
            for pic in pictures(frames, colour, Crop()):
                if got % 4 == 0:
                    samples.append(pic.rgb)
                got += 1
                if got >= (4 if len(points) > 1 else 24):
                    break
            frames.close()
    finally:
        container.close()
    vhs_like = info.codec not in _DIGITAL_CODECS or info.container == "avi"
    return detect_crop(samples, vhs_bottom=vhs_like)
