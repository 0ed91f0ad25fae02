"""The media layer: probe, decode, filter and encode with PyAV.

Nothing here imports torch; pictures cross into the SR engine as
H x W x 3 uint8 RGB arrays wrapped in :class:`~vhsup.media.picture.Picture`.
"""
