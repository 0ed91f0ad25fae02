"""The media layer: probe, decode, filter and encode with PyAV.

Nothing here imports torch; pictures cross into the SR engine as
H x W x 3 uint8 RGB arrays wrapped in :class:`~vhsup.media.picture.Picture`.
"""

#: The video encoders vhsup offers (``--codec``), first the default.
VIDEO_CODECS = ("libx264", "libx265", "ffv1", "prores_ks", "h264_nvenc", "hevc_nvenc")
