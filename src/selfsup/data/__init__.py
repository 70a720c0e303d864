"""Data: the built-in image sets, image folders, and the `--data` spec that names either.

Every set yields (uint8 image tensor (C, H, W), int label or -1); nothing here downloads.
"""

from .builtin import BUILTIN, load_builtin
from .folder import IMAGE_EXTENSIONS, BadImageError, FolderImageSet, decode_image, index_images
from .idx import read_idx
from .images import ArrayImageSet, ImageSet
from .open import open_labeled, open_unlabeled

__all__ = [
    "BUILTIN", "IMAGE_EXTENSIONS", "ArrayImageSet", "BadImageError", "FolderImageSet", "ImageSet",
    "decode_image", "index_images", "load_builtin", "open_labeled", "open_unlabeled", "read_idx",
]
