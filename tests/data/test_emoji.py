"""The built-in `--data emoji`: the npm packages' drawings, labelled by category, split by emoji, cached."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter

import pytest
import torch

from selfsup.cli import main
from selfsup.data import emoji, open_labeled, open_unlabeled
from selfsup.data.cache import cache_root
from selfsup.errors import SelfsupError

REAL_CACHE = cache_root()  # read at import, before tests/conftest.py gives each test its own SELFSUP_CACHE
SOURCE = REAL_CACHE / emoji.SOURCE  # unpacked by scripts/setup.sh

pytestmark = pytest.mark.skipif(not (SOURCE / "emoji.json").is_file() and shutil.which("npm") is None,
                                reason="no npm here to fetch the emoji packages (scripts/setup.sh)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache holding only a link to the real source folder; both splits are decoded into it once."""
    root = tmp_path_factory.mktemp("cache")
    (root / emoji.SOURCE).symlink_to(SOURCE, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFSUP_CACHE", str(root))
        sets = {split: emoji.load_emoji(split) for split in ("train", "test")}
        yield root, sets


@pytest.fixture
def sets(cache, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(cache[0]))
    return cache[1]


def catalogue() -> dict[str, dict]:
    return {e["unified"]: e for e in emoji.read_catalogue(SOURCE)}


def test_images_are_rgb_64px_on_grey(sets):
    for split, images in sets.items():
        assert images.name == f"emoji/{split}" and images.classes == list(emoji.CATEGORIES)
        assert images.channels == 3 and images.native_size == emoji.SIZE
        assert images.images.dtype == torch.uint8 and images.images.shape[1:] == (3, 64, 64)
        assert images.labels.dtype == torch.int64 and len(images.labels) == len(images.images)
        image, label = images[0]
        assert image.shape == (3, 64, 64) and isinstance(label, int)
        corners = images.images[:, :, 0, 0]  # (N, 3): transparent in most drawings
        assert corners.median(0).values.tolist() == [emoji.BACKGROUND] * 3


def test_every_drawing_of_every_emoji_is_there(sets):
    known = catalogue()
    assert len(known) == 1906 and "1F3FB" not in known  # Component's skin-tone swatches are left out
    everything = [(e, v, f) for s in sets.values() for e, v, f in zip(s.emoji, s.vendors, s.files)]
    assert len(everything) == len(set(everything)) == 2 * (1906 + 1875)
    for vendor in emoji.VENDORS:
        have = Counter(e for e, v, _ in everything if v == vendor)
        assert have == {u: len(e["images"][vendor]) for u, e in known.items()}


def test_no_emoji_is_on_both_sides(sets):
    train, test = sets["train"], sets["test"]
    assert not set(train.emoji) & set(test.emoji)
    drawings = [{hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in s.images} for s in (train, test)]
    assert not drawings[0] & drawings[1]  # nor a drawing that two emoji share (flags, families)


def test_skin_tones_and_both_vendors_follow_their_emoji(sets):
    owner = {f: u for u, e in catalogue().items() for v in emoji.VENDORS for f in e["images"][v]}  # file -> base
    for images in sets.values():
        per_emoji = Counter(images.emoji)
        for vendor in emoji.VENDORS:
            assert vendor in images.vendors
        assert [owner[f] for f in images.files] == images.emoji  # a skin tone's drawing is with its base emoji
        waving = [f for e, f in zip(images.emoji, images.files) if e == "1F44B"]
        if waving:  # the waving hand and its five skin tones, by both vendors, in this split
            assert sorted(waving) == sorted(["1f44b.png", *(f"1f44b-{t}.png" for t in
                                             ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"))] * 2)
        assert all(n % 2 == 0 for n in per_emoji.values())  # google's and twitter's of each


def test_labels_cover_every_category_in_both_splits_about_80_20(sets):
    counts = {s: torch.bincount(sets[s].labels, minlength=len(emoji.CATEGORIES)) for s in sets}
    for split in sets:
        assert sets[split].labels.min() >= 0 and sets[split].labels.max() < len(emoji.CATEGORIES)
        assert counts[split].gt(0).all()
    share = counts["test"].float() / (counts["train"] + counts["test"]).float()
    assert share.gt(0.12).all() and share.lt(0.28).all()


def test_split_is_seeded_and_a_second_open_reads_the_cache(sets, monkeypatch, cache):
    manifest = json.loads((cache[0] / emoji.FOLDER / emoji.MANIFEST).read_text())
    assert manifest["meta"]["test"]["emoji"] == sets["test"].emoji
    monkeypatch.setattr(emoji, "decode", lambda path: pytest.fail("decoded although cached"))
    again = emoji.load_emoji("test")
    assert torch.equal(again.images, sets["test"].images) and again.files == sets["test"].files


def test_the_built_in_name_opens_it_everywhere(sets):
    train, test = open_labeled("emoji", test_fraction=0.3, seed=5)  # the set's one split, like fashion-mnist's
    assert train.emoji == sets["train"].emoji and test.emoji == sets["test"].emoji
    unlabeled = open_unlabeled("emoji")
    assert len(unlabeled) == len(sets["train"]) and unlabeled.channels == 3
    named = open_labeled(f"emoji:{SOURCE}")[1]
    assert torch.equal(named.images, sets["test"].images)


@pytest.mark.parametrize("spec, words", [
    (None, "run `bash scripts/setup.sh`"),
    ("empty", "has no emoji.json: emoji:DIR needs"),
])
def test_missing_files_are_one_clear_line(tmp_path, monkeypatch, spec, words):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfsupError) as e:
        open_labeled("emoji" if spec is None else f"emoji:{tmp_path / spec}")
    assert words in str(e.value) and "emoji-datasource-google" in str(e.value) and "\n" not in str(e.value)


def test_a_missing_drawing_names_the_setup(tmp_path, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(SOURCE / "emoji.json", source / "emoji.json")
    (source / "google").mkdir()
    (source / "twitter").mkdir()
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    with pytest.raises(SelfsupError, match=r"is missing: remove .* run `bash scripts/setup.sh`"):
        emoji.load_emoji("train", source)


def test_cli_knn_of_pixels_runs_on_emoji(sets, tmp_path, capsys):
    out = tmp_path / "knn.json"
    code = main(["eval", "knn", "--checkpoint", "pixels", "--data", "emoji", "--limit", "600,200", "--k", "20",
                 "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["data"] == "emoji" and result["classes"] == 9 and result["image_size"] == 64
    assert (result["n_train"], result["n_test"]) == (600, 200) and 0.3 < result["top1"] <= 1


def test_cli_without_the_data_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    code = main(["eval", "knn", "--checkpoint", "pixels", "--data", "emoji", "--out", str(tmp_path / "knn.json")])
    err = capsys.readouterr().err
    assert code != 0 and "bash scripts/setup.sh" in err and "Traceback" not in err
