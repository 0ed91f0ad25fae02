"""The restorers' stages that run on the source pictures before SR, one module per stage.

``chroma``: the chroma-to-luma delay of tape sources, measured and undone.
``composite``: dot crawl and rainbows of composite captures (Dedot, Bifrost), before deinterlacing.
``denoise``: temporal denoise (MVTools through the bridge, FFmpeg atadenoise without the extra).
``preset``: ``--restore vhs|dvd``, the restorers' order in one flag.
``vs``: the VapourSynth bridge (the ``restore`` extra): decoded PyAV frames
into a VapourSynth clip and back, in memory and streaming; PyAV keeps the
audio, the subtitles and the frame accounting. It also tells whether the
extra is installed and works.
``qtgmc``: QTGMC, the motion-compensated deinterlacer, through the bridge.
``ivtc``: inverse telecine through VIVTC (VFM + VDecimate), through the bridge.
"""
