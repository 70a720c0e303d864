"""Data: the built-in image sets, image folders, tar shards, and the `--data` spec that names them.

Every set yields (uint8 image tensor (C, H, W), int label or -1); nothing here downloads.
"""

from .builtin import BUILTIN, load_builtin
from .folder import (
                     IMAGE_EXTENSIONS,
                     MAX_PIXELS,
                     BadImageError,
                     FolderImageSet,
                     SkipBadImages,
                     decode_bytes,
                     decode_image,
                     header_problem,
                     index_images,
                     scan_images,
)
from .folder_index import cached_index, cached_scan
from .idx import read_idx
from .images import ArrayImageSet, ImageSet, SubsetImages, seeded_subset
from .open import open_labeled, open_unlabeled
from .shards import ShardSet, is_shard_spec, open_shards

__all__ = [
    "BUILTIN", "IMAGE_EXTENSIONS", "MAX_PIXELS", "ArrayImageSet", "BadImageError", "FolderImageSet", "ImageSet",
    "ShardSet", "SkipBadImages", "cached_index", "cached_scan", "decode_bytes", "decode_image", "header_problem",
    "index_images", "is_shard_spec", "load_builtin", "open_labeled", "open_shards", "open_unlabeled", "read_idx",
    "scan_images", "SubsetImages", "seeded_subset",
]
