"""Synthetic degradation for training: HR frames in, realistic LR inputs out.

    from vhsup.train.degrade import DegradationSpec, Degrader, load_spec, PRESETS, show_degradations

    spec = load_spec("vhs", config.get("degradation"), path=config_path)
    degrade = Degrader(spec, scale=4)
    lr = degrade(hr_batch, generator)        # every draw from `generator`

Presets (``--degradation``):

    vhs      tape artefacts (bandwidth, chroma delay/noise, dropouts, jitter,
             head switching, halos, combing) + 4:2:x chroma + sometimes
             MPEG-2, on top of a milder Real-ESRGAN pipeline
    dvd      mild blur, 4:2:0, MPEG-2 at 3-9 Mb/s
    generic  Real-ESRGAN's second-order pipeline with its published ranges
    none     antialiased bicubic downscale by the model scale

Modules: ``spec`` (ranges, presets, validation), ``kernels`` (blur
kernels), ``realesrgan`` (second-order pipeline), ``vhs`` (tape and chroma
subsampling), ``mpeg2`` (PyAV round trip), ``degrader`` (the order),
``grid`` (the preview PNG).
"""

from vhsup.train.degrade.degrader import Degrader
from vhsup.train.degrade.grid import show_degradations
from vhsup.train.degrade.spec import PRESETS, DegradationSpec, load_spec

__all__ = ["PRESETS", "DegradationSpec", "Degrader", "load_spec", "show_degradations"]
