"""Every data source, including corrupt, grayscale, alpha, 16-bit and odd-sized images."""

from __future__ import annotations

import numpy as np
import pytest

from generator.data.idx import read_idx, write_idx
from generator.data.imageio import ImageReadError, read_image
from generator.data.sources import SAMPLE_PHOTOS, load_dataset
from generator.engine.preprocess import prepare_batch
from generator.models.spec import ModelSpec


def test_samples_have_licences_and_sources():
    ds = load_dataset("photos", "samples")
    assert [it.id for it in ds.items] == [p[0] for p in SAMPLE_PHOTOS]
    for it in ds.items:
        assert it.licence and it.source
        assert it.pixels.dtype == np.uint8 and it.pixels.ndim == 3 and it.pixels.shape[2] in (1, 3)
    camera = next(it for it in ds.items if it.id == "camera")
    assert camera.pixels.shape[2] == 1  # grayscale kept as one channel


def test_samples_subset_and_unknown_name():
    ds = load_dataset("p", "samples", {"names": ["coffee", "clock"]})
    assert [it.id for it in ds.items] == ["coffee", "clock"]
    with pytest.raises(ValueError, match="unknown photo 'cofee'"):
        load_dataset("p", "samples", {"names": ["cofee"]})


def test_folder_source_reads_odd_images_and_skips_corrupt(image_folder):
    ds = load_dataset("pics", f"folder:{image_folder}")
    assert ds.class_names == ["bee", "cat"]
    ids = {it.id: it for it in ds.items}
    assert set(ids) == {"bee-rgb0", "bee-rgb1", "bee-gray", "cat-rgb0", "cat-rgb1", "cat-alpha", "cat-deep16"}
    assert ids["bee-gray"].pixels.shape == (33, 47, 1) and ids["bee-gray"].label == 0
    assert ids["cat-alpha"].pixels.shape == (30, 30, 3) and ids["cat-alpha"].label == 1
    deep = ids["cat-deep16"].pixels
    assert deep.dtype == np.uint8 and deep.shape == (31, 29, 1) and deep.max() > 200  # scaled, not clipped
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("broken.jpg")
    assert "not a readable image" in ds.skipped[0][1]


def test_alpha_is_composited_on_white(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    px = read_image(tmp_path / "a.png")
    assert px[0, 0].tolist() == [200, 0, 0] and px[3, 3].tolist() == [255, 255, 255]


def test_corrupt_file_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(bad)


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        load_dataset("x", f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images"):
        load_dataset("x", f"folder:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset("x", f"folder:{tmp_path}", {"colour": 1})


def test_flat_folder_is_unlabelled(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "one.png")
    ds = load_dataset("flat", f"folder:{tmp_path}")
    assert len(ds) == 1 and ds.items[0].label is None and not ds.has_labels


def test_idx_round_trip_and_fashion_mnist_from_given_dir(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 9], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    ds = load_dataset("fm", "fashion-mnist", {"path": str(tmp_path), "limit": 4})
    assert len(ds) == 4 and ds.items[3].label == 3 and ds.items[0].pixels.shape == (28, 28, 1)
    assert np.array_equal(ds.items[2].pixels[:, :, 0], images[2])
    assert ds.class_names[9] == "Ankle boot"


def test_idx_truncated_file_is_reported(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((2, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: IDX header promises"):
        read_idx(path)


def test_fashion_mnist_missing_dir_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fm", "fashion-mnist", {"path": str(tmp_path)})


@pytest.mark.skipif(not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split():
    ds = load_dataset("fm", "fashion-mnist", {"split": "test"})
    assert len(ds) == 10000 and ds.has_labels
    assert np.bincount(ds.labels(), minlength=10).tolist() == [1000] * 10


def test_preprocessing_matches_spec_for_any_mode():
    spec = ModelSpec(id="m", source="t", input_size=(3, 20, 20), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                     class_names=["a"], resize=24, interpolation="bicubic")
    gray = np.full((30, 40, 1), 128, np.uint8)
    rgb = np.zeros((50, 30, 3), np.uint8)
    x, display = prepare_batch([gray, rgb], spec)
    assert x.shape == (2, 3, 20, 20) and display.shape == (2, 20, 20, 3)
    # 128/255 normalised by mean .5 std .25
    assert abs(float(x[0].mean()) - (128 / 255 - 0.5) / 0.25) < 1e-5
    assert abs(float(x[1].mean()) - (0 - 0.5) / 0.25) < 1e-6
