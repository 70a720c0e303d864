"""Tar shards: what `shards:PATTERN` names, sample counts read from the tar headers (and cached), and
samples read through webdataset and decoded like image files."""

import os
import re
import tarfile

import pytest
import torch

from selfsup.data import BadImageError, decode_bytes, decode_image, is_shard_spec, open_shards
from selfsup.data import shards as shards_module
from selfsup.data.shards import ShardSet, count_samples, shard_paths
from selfsup.errors import SelfsupError

from .conftest import write_image, write_shards


def test_a_pattern_a_file_or_a_folder_names_the_shards(tmp_path):
    paths = [str(p) for p in write_shards(tmp_path, [1, 1, 1])]
    (tmp_path / "notes.txt").write_text("")
    assert shard_paths(f"shards:{tmp_path}/{{0..2}}.tar") == paths
    assert shard_paths(f"shards:{tmp_path}/{{0,2}}.tar") == [paths[0], paths[2]]
    assert shard_paths(f"shards:{paths[1]}") == [paths[1]]
    assert shard_paths(f"shards:{tmp_path}") == paths
    assert is_shard_spec("shards:x") and not is_shard_spec("digits")


@pytest.mark.parametrize("spec, message", [
    ("shards:", "names no shards: pass shards:/data/train-{000000..000099}.tar"),
    ("shards:ROOT/{0..4}.tar", "names 5 files, 2 of which do not exist, e.g. 'ROOT/3.tar'"),
    ("shards:ROOT/7.tar", "shard file 'ROOT/7.tar' does not exist"),
    ("shards:ROOT/empty", "folder 'ROOT/empty' holds no .tar files"),
    ("shards:ROOT/{0,0}.tar", "names some shards twice"),
])
def test_a_wrong_spec_says_what_to_pass(tmp_path, spec, message):
    write_shards(tmp_path, [1, 1, 1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfsupError, match=re.escape(message.replace("ROOT", str(tmp_path)))):
        open_shards(spec.replace("ROOT", str(tmp_path)))


def test_shards_without_images_or_not_tar_are_refused(tmp_path):
    with tarfile.open(tmp_path / "text.tar", "w") as tar:
        (tmp_path / "a.txt").write_text("hi")
        tar.add(tmp_path / "a.txt", "a.txt")
    with pytest.raises(SelfsupError, match="hold no image members: write each image as a member named KEY.EXT"):
        open_shards(f"shards:{tmp_path}/text.tar")
    (tmp_path / "fake.tar").write_bytes(b"\x00not a tar" * 100)
    with pytest.raises(SelfsupError, match="cannot read shard '.*fake.tar'"):
        open_shards(f"shards:{tmp_path}/fake.tar")


def test_counts_come_from_the_headers_once_then_from_the_cache(tmp_path, monkeypatch):
    paths = write_shards(tmp_path, [3, 0, 5])
    past = os.stat(paths[0]).st_mtime - 3600
    for p in paths:
        os.utime(p, (past, past))  # written earlier: a shard changed within the last seconds is counted again
    counted = []
    monkeypatch.setattr(shards_module, "count_samples", lambda p: counted.append(p) or count_samples(p))
    spec = f"shards:{tmp_path}/{{0..2}}.tar"
    assert open_shards(spec).counts == [3, 0, 5] and len(counted) == 3
    assert open_shards(spec).counts == [3, 0, 5] and len(counted) == 3
    write_shards(tmp_path / "new", [4])
    os.replace(tmp_path / "new" / "0.tar", paths[2])  # a shard replaced: counted again, alone
    assert open_shards(spec).counts == [3, 0, 4] and counted[3:] == [str(paths[2])]


def test_samples_are_read_in_any_shard_order_from_any_position(tmp_path):
    write_shards(tmp_path, [3, 0, 5])
    shards = open_shards(f"shards:{tmp_path}")
    assert isinstance(shards, ShardSet) and len(shards) == 8
    # order [2, 1, 0] lays out samples 3..7 then 0..2; from position 6, wrapping round: 1 2 3 4
    got = list(shards.read([2, 1, 0], 6, 4))
    assert [i for i, _, _ in got] == [1, 2, 3, 4]
    for i, name, data in got:
        assert name == f"{tmp_path}/{'0' if i < 3 else '2'}.tar:sample{i:05d}.png"
        image = decode_bytes(data, name)
        assert image.dtype == torch.uint8 and image.shape == (3, 3, 4 + i % 3) and image[0, 0, 0] == i


def test_shard_bytes_decode_like_files_and_fail_alike(tmp_path):
    path = write_image(tmp_path / "a.png", value=(1, 2, 3), mode="RGB")
    assert torch.equal(decode_bytes(path.read_bytes(), "x.tar:a.png"), decode_image(str(path)))
    with pytest.raises(BadImageError, match="cannot decode image 'x.tar:b.png'") as caught:
        decode_bytes(b"garbage", "x.tar:b.png")
    assert caught.value.path == "x.tar:b.png" and caught.value.reason


def test_other_commands_refuse_shards_clearly(tmp_path):
    from selfsup.data import open_labeled, open_unlabeled
    for opener in (open_unlabeled, open_labeled):
        with pytest.raises(SelfsupError, match="only `selfsup train` reads tar shards"):
            opener(f"shards:{tmp_path}")


def test_a_folder_of_shards_passed_as_a_folder_hints_at_shards(tmp_path):
    from selfsup.data import open_unlabeled
    write_shards(tmp_path, [1])
    with pytest.raises(SelfsupError, match=f"for the tar shards in it pass shards:{tmp_path}"):
        open_unlabeled(str(tmp_path))
