"""Safety of the ``folder:`` source and image reading: symlinks, relative paths, limit, EXIF."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import generator.data.sources as sources
from generator.data.idx import write_idx
from generator.data.imageio import probe_image, read_image
from generator.data.sources import load_dataset


def _png(path: Path, value: int = 0, shape=(6, 5, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


# --- 1. symlinks -------------------------------------------------------------------------


def test_symlink_to_file_outside_root_is_refused(tmp_path):
    secret = _png(tmp_path / "private" / "secret.png", 7)
    root = tmp_path / "data"
    _png(root / "cat" / "a.png")
    (root / "cat" / "leak.png").symlink_to(secret)
    with pytest.raises(ValueError) as info:
        load_dataset("d", f"folder:{root}")
    message = str(info.value)
    assert f"folder:{root}" in message
    assert "leak.png" in message and str(secret) in message


def test_symlink_to_directory_outside_root_is_refused_naming_every_link(tmp_path):
    outside = tmp_path / "private"
    _png(outside / "x.png")
    root = tmp_path / "data"
    _png(root / "cat" / "a.png")
    # A top-level link becomes a class folder whose files would be read from outside;
    # a nested one is refused too, whether or not this Python's rglob follows it.
    (root / "dog").symlink_to(outside, target_is_directory=True)
    (root / "cat" / "more").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside") as info:
        load_dataset("d", f"folder:{root}")
    message = str(info.value)
    assert os.path.join("data", "dog") in message and os.path.join("cat", "more") in message
    assert str(outside) in message


def test_dangling_symlink_is_reported_in_skipped_and_logged(tmp_path, caplog):
    root = tmp_path / "data"
    _png(root / "cat" / "a.png")
    (root / "cat" / "gone.png").symlink_to(tmp_path / "deleted.png")
    with caplog.at_level(logging.WARNING, logger="generator.data.sources"):
        ds = load_dataset("d", f"folder:{root}")
    assert [it.id for it in ds.items] == ["cat-a"]
    assert len(ds.skipped) == 1
    name, reason = ds.skipped[0]
    assert name.endswith("gone.png") and "dangling symlink" in reason and "deleted.png" in reason
    assert any("gone.png" in rec.getMessage() for rec in caplog.records)


def test_symlinks_inside_root_are_read(tmp_path):
    root = tmp_path / "data"
    _png(root / "cat" / "a.png", 3)
    (root / "cat" / "alias.png").symlink_to("a.png")  # relative link, stays inside
    ds = load_dataset("d", f"folder:{root}")
    assert [it.id for it in ds.items] == ["cat-a", "cat-alias"] and not ds.skipped


def test_dataset_folder_that_is_itself_a_symlink_is_allowed(tmp_path):
    real = tmp_path / "real"
    _png(real / "cat" / "a.png")
    (real / "cat" / "b.png").symlink_to(real / "cat" / "a.png")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert len(load_dataset("d", f"folder:{link}")) == 2


# --- 2. relative paths -------------------------------------------------------------------


def test_relative_folder_resolves_against_base_dir(tmp_path, monkeypatch):
    config_dir = tmp_path / "project"
    _png(config_dir / "imgs" / "cat" / "a.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ds = load_dataset("d", "folder:imgs", base_dir=config_dir)
    assert [it.id for it in ds.items] == ["cat-a"]
    assert ds.items[0].source == str(config_dir / "imgs" / "cat" / "a.png")
    # Without base_dir the working directory still decides, as before.
    with pytest.raises(ValueError, match="is not a directory"):
        load_dataset("d", "folder:imgs")


def test_absolute_and_home_paths_ignore_base_dir(tmp_path, monkeypatch):
    _png(tmp_path / "abs" / "one.png")
    assert len(load_dataset("d", f"folder:{tmp_path / 'abs'}", base_dir=tmp_path / "nowhere")) == 1
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _png(tmp_path / "home" / "pics" / "one.png")
    assert len(load_dataset("d", "folder:~/pics", base_dir=tmp_path / "nowhere")) == 1


def test_fashion_mnist_relative_path_resolves_against_base_dir(tmp_path, monkeypatch):
    directory = tmp_path / "project" / "fm"
    directory.mkdir(parents=True)
    write_idx(directory / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(directory / "t10k-labels-idx1-ubyte", np.array([0, 1, 2], np.uint8))
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("fm", "fashion-mnist", {"path": "fm"}, base_dir=tmp_path / "project")
    assert len(ds) == 3


# --- 3. limit ----------------------------------------------------------------------------


def _limit_folder(root: Path) -> Path:
    _png(root / "cat" / "a.jpg", 1)
    _png(root / "cat" / "a.png", 2)  # same slug as a.jpg: id "cat-a-2"
    (root / "cat" / "b_broken.png").write_bytes(b"not a png")
    _png(root / "cat" / "c.png", 3)
    _png(root / "dog" / "d.png", 4)
    _png(root / "dog" / "e.png", 5)
    _png(root / "top.png", 6)
    return root


def test_limit_stops_reading_and_keeps_order_and_ids(tmp_path, monkeypatch):
    root = _limit_folder(tmp_path / "data")
    full = load_dataset("d", f"folder:{root}")
    decoded = []

    def counting_probe(path):
        decoded.append(Path(path).name)
        return probe_image(path)

    monkeypatch.setattr(sources, "probe_image", counting_probe)
    ds = load_dataset("d", f"folder:{root}", {"limit": 3})
    # The broken file is probed, skipped and not counted; nothing after the third image is read.
    assert decoded == ["a.jpg", "a.png", "b_broken.png", "c.png"]
    assert [it.id for it in ds.items] == [it.id for it in full.items[:3]] == ["cat-a", "cat-a-2", "cat-c"]
    for mine, theirs in zip(ds.items, full.items):
        assert mine.label == theirs.label and np.array_equal(mine.pixels, theirs.pixels)
    assert [Path(f).name for f, _ in ds.skipped] == ["b_broken.png"]
    decoded.clear()
    ds = load_dataset("d", f"folder:{root}", {"limit": 6})
    assert [it.id for it in ds.items] == [it.id for it in full.items] and len(decoded) == 7


@pytest.mark.parametrize("bad", [0, -1, 2.5, "20", True])
@pytest.mark.parametrize("source", ["folder", "samples"])
def test_limit_is_validated_before_loading(tmp_path, source, bad):
    _png(tmp_path / "one.png")
    spec = f"folder:{tmp_path}" if source == "folder" else "samples"
    with pytest.raises(ValueError, match="limit"):
        load_dataset("d", spec, {"limit": bad})


# --- 4. EXIF orientation -----------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = (255, 0, 0)  # left half red
    stored[:, 16:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    px = read_image(path).astype(int)
    assert px.shape == (32, 16, 3)
    expected = np.rot90(stored, k=-1).astype(int)  # clockwise: the left half ends up on top
    assert np.abs(px - expected).mean() < 8
    assert px[:12, :, 0].mean() > 200 and px[20:, :, 2].mean() > 200
