"""Data: the built-in image sets, image folders, and the `--data` spec that names either.

Every set yields (uint8 image tensor (C, H, W), int label or -1); nothing here downloads.
"""

from .builtin import BUILTIN, load_builtin
from .folder import (
                     IMAGE_EXTENSIONS,
                     MAX_PIXELS,
                     BadImageError,
                     FolderImageSet,
                     SkipBadImages,
                     decode_image,
                     header_problem,
                     index_images,
                     scan_images,
)
from .idx import read_idx
from .images import ArrayImageSet, ImageSet
from .open import open_labeled, open_unlabeled

__all__ = [
    "BUILTIN", "IMAGE_EXTENSIONS", "MAX_PIXELS", "ArrayImageSet", "BadImageError", "FolderImageSet", "ImageSet",
    "SkipBadImages", "decode_image", "header_problem", "index_images", "load_builtin", "open_labeled",
    "open_unlabeled", "read_idx", "scan_images",
]
