"""Checks of a user's files that need no heavy import, so the CLI can refuse a wrong file at once."""

from pathlib import Path

from selfsup.errors import SelfsupError


def not_a_checkpoint(path: str | Path) -> str | None:
    """Why the existing file `path` cannot be a selfsup checkpoint, judged from its first bytes, or None.
    torch.save writes a zip archive; a truncated one still starts with its signature (and reads as corrupt later)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic and magic != b"PK\x03\x04":
        return (f"'{path}' is not a selfsup checkpoint (not a PyTorch checkpoint archive); pass one written by "
                "`selfsup train` (RUN/checkpoints/last.ckpt)")
    return None


def in_existing_folder(out: str | Path) -> Path:
    """The output path `out` (~ expanded); a SelfsupError naming the folder to create when its folder is missing."""
    out = Path(out).expanduser()
    if not out.parent.is_dir():
        raise SelfsupError(f"the folder of --out '{out}' does not exist: create '{out.parent}' first, or pass a "
                           "file in an existing folder")
    return out
