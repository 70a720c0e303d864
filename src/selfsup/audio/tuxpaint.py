"""The human speech of Debian's tuxpaint-stamps-default: children's-drawing-program stamps (pictures) whose short
descriptions were recorded by volunteers, 7,352 OGG files in 12 languages named STAMP_desc_LANG.ogg next to the
stamp's picture. Language identification uses the 9 languages with 300+ recordings each (LANGUAGES)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

from selfsup.errors import SelfsupError

TUXPAINT_DIR = "/usr/share/tuxpaint/stamps"
LANGUAGES = ("fr", "ru", "ro", "ca", "bg", "es", "be", "el", "da")  # 928 recordings (fr) down to 323 (da)
# e.g. animals/birds/duck_desc_fr.ogg (one file of 2022.06.04 ends .ogg.ogg); STAMP.ogg (no _desc_) is a sound
# effect, STAMP_desc.ogg has no language
_DESCRIPTION = re.compile(r"(?P<stamp>.+)_desc_(?P<language>[a-z]{2,3}(?:_[A-Z]{2})?)(?:\.ogg)+")


@dataclass(frozen=True)
class Recording:
    """One recorded description: its OGG file, the stamp it describes (its path under the stamps folder without
    extension, e.g. 'animals/birds/duck') and the language code from the file name."""

    path: str
    stamp: str
    language: str


@lru_cache(maxsize=4)
def tuxpaint_recordings(root: str = TUXPAINT_DIR) -> tuple[Recording, ...]:
    """Every description recording under `root`, in any language, sorted by path."""
    if not os.path.isdir(root):
        raise SelfsupError(f"the tuxpaint recordings are not installed (no folder {root}): "
                           "apt-get install tuxpaint-stamps-default")
    recordings = []
    for folder, _, files in os.walk(root):
        for name in files:
            match = _DESCRIPTION.fullmatch(name)
            if match:
                stamp = os.path.relpath(os.path.join(folder, match["stamp"]), root)
                recordings.append(Recording(os.path.join(folder, name), stamp, match["language"]))
    if not recordings:
        raise SelfsupError(f"'{root}' holds no STAMP_desc_LANG.ogg recordings: reinstall tuxpaint-stamps-default")
    return tuple(sorted(recordings, key=lambda r: r.path))
