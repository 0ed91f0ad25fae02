"""vhsup: upscale VHS captures and DVD rips with GAN super-resolution.

Python API::

    import vhsup
    result = vhsup.upscale_video("episode.avi", "episode.mkv", model="compact-x4", height=1080)
    for picture in vhsup.upscaled_frames("episode.avi", frames=10):
        picture.rgb  # H x W x 3 uint8 at the output size

Options are the CLI's flags (see ``vhsup.pipeline.Options``).
"""

from __future__ import annotations

from vhsup.errors import VhsupError

__version__ = "0.1.0"  # the one version string; pyproject.toml reads it (hatch)
__all__ = ["VhsupError", "upscale_video", "upscaled_frames", "probe", "__version__"]


def __getattr__(name: str):
    # Lazy: `import vhsup` should not import torch or PyAV.
    if name in ("upscale_video", "upscaled_frames"):
        from vhsup import pipeline

        return getattr(pipeline, name)
    if name == "probe":
        from vhsup.media.probe import probe

        return probe
    raise AttributeError(name)
