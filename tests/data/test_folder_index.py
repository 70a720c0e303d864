"""The cached folder index: a second look at an unchanged folder reads neither the folder tree nor a
header again, and any added, removed or renamed file (at any depth) makes it walk again."""

import os
import time

import pytest

from selfsup.data import cached_index, cached_scan, folder, index_images, open_unlabeled
from selfsup.data import folder_index as folder_index_module
from selfsup.data.cache import cache_file


def settle(root):
    """Date every folder under root an hour back, as for a data set written earlier (a folder changed
    within the last seconds is not trusted, see SETTLED_NS)."""
    past = time.time() - 3600
    for folder_path, _, _ in os.walk(root):
        os.utime(folder_path, (past, past))


@pytest.fixture
def tree(tmp_path, make_image):
    root = tmp_path / "images"
    for rel in ["a.png", "sub/b.png", "sub/deeper/c.png", "z/d.png"]:
        make_image(root / rel, fmt="PNG")
    (root / "z" / "empty.png").write_bytes(b"")  # listed, refused by the header check
    settle(root)
    return root


def count_walks(monkeypatch):
    walks = []
    real = folder_index_module.walk_images
    monkeypatch.setattr(folder_index_module, "walk_images", lambda root: walks.append(root) or real(root))
    return walks


def count_headers(monkeypatch):
    read = []
    real = folder.header_problem
    monkeypatch.setattr(folder, "header_problem", lambda path: read.append(path) or real(path))
    return read


def test_a_second_index_of_an_unchanged_folder_is_read_from_the_cache(tree, monkeypatch):
    walks = count_walks(monkeypatch)
    first = cached_index(str(tree))
    assert first == index_images(str(tree)) and len(first) == 5
    assert cached_index(str(tree)) == first and walks == [str(tree)]
    assert cached_index(str(tree) + "/") == index_images(str(tree) + "/")  # the same cache, paths as given


@pytest.mark.parametrize("change", ["add", "remove", "rename", "add folder"])
def test_a_file_added_removed_or_renamed_deep_down_walks_again(tree, monkeypatch, make_image, change):
    walks = count_walks(monkeypatch)
    cached_index(str(tree))
    deep = tree / "sub" / "deeper"
    if change == "add":
        make_image(deep / "new.png", fmt="PNG")
    elif change == "remove":
        (deep / "c.png").unlink()
    elif change == "rename":
        (deep / "c.png").rename(deep / "c2.png")
    else:
        make_image(deep / "new" / "e.png", fmt="PNG")
    assert cached_index(str(tree)) == index_images(str(tree)) and len(walks) == 2


def test_a_folder_changed_just_before_the_walk_is_walked_again(tree, monkeypatch, make_image):
    # Its mtime may not show a change made in the same clock tick, right after it was read.
    make_image(tree / "sub" / "fresh.png", fmt="PNG")
    walks = count_walks(monkeypatch)
    cached_index(str(tree))
    cached_index(str(tree))
    assert len(walks) == 2


def test_header_checks_are_reused_but_bad_files_read_again(tree, monkeypatch):
    read = count_headers(monkeypatch)
    paths = cached_index(str(tree))
    good, bad = cached_scan(str(tree), paths)
    assert len(read) == 5 and len(good) == 4 and [p for p, _ in bad] == [str(tree / "z" / "empty.png")]
    read.clear()
    assert cached_scan(str(tree), paths) == (good, bad)
    assert read == [str(tree / "z" / "empty.png")]  # it may have been fixed since


def test_checks_survive_a_walk_for_the_files_still_there(tree, monkeypatch, make_image):
    read = count_headers(monkeypatch)
    cached_scan(str(tree), cached_index(str(tree)))
    make_image(tree / "sub" / "new.png", fmt="PNG")
    read.clear()
    good, _ = cached_scan(str(tree), cached_index(str(tree)))
    assert sorted(read) == [str(tree / "sub" / "new.png"), str(tree / "z" / "empty.png")]
    assert str(tree / "sub" / "new.png") in good


def test_a_corrupt_cache_file_is_ignored_and_rewritten(tree, monkeypatch):
    paths = cached_index(str(tree))
    file = cache_file("folder", os.path.realpath(tree))
    for junk in [b"{not json", b"\xff\xfe", b'{"version": 1}', b"[]", b""]:
        file.write_bytes(junk)
        assert cached_index(str(tree)) == paths
        assert cached_scan(str(tree), paths)[0] == [p for p in paths if not p.endswith("empty.png")]
    walks = count_walks(monkeypatch)
    cached_index(str(tree))
    assert walks == []  # rewritten whole by the last round


def test_an_unwritable_cache_folder_is_a_warning(tree, tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be made, even by root
    images = open_unlabeled(str(tree))
    assert list(images.paths) == index_images(str(tree))
    assert cached_scan(images.root, images.paths)[0] == [p for p in images.paths if not p.endswith("empty.png")]
    warnings = [r for r in caplog.records if "cannot write the cache file" in r.getMessage()]
    assert len(warnings) == 1 and "SELFSUP_CACHE" in warnings[0].getMessage()


def test_the_cache_folder_follows_selfsup_cache(tmp_path, monkeypatch, tree):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "elsewhere"))
    cached_index(str(tree))
    assert [f.name.startswith("folder-") for f in (tmp_path / "elsewhere" / "index").iterdir()] == [True]
    monkeypatch.delenv("SELFSUP_CACHE")
    assert cache_file("folder", "x").parent == cache_file("folder", "x").home() / ".cache" / "selfsup" / "index"
