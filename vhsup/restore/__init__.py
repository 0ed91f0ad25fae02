"""The restorers' stages that run on the source pictures before SR, one module per stage.

``chroma``: the chroma-to-luma delay of tape sources, measured and undone.
"""
