"""Folder datasets are listed, not loaded: nothing is decoded at load, the digest hashes file
bytes, whole-dataset scans read batches, and peak memory does not grow with the folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import generator.data.dataset as dataset_module
from generator.data.dataset import clear_decode_cache
from generator.data.imageio import probe_image, read_image
from generator.data.sources import load_dataset
from generator.models.spec import ModelSpec

CLASSES = ["ant", "bee", "cat", "dog"]
COUNT = 2000
SIDE = 128  # 2,000 decoded images: 2000 * 128 * 128 * 3 = 98 MB, so holding them would show
REPO = Path(__file__).resolve().parents[1]


def _image(i: int) -> np.ndarray:
    """A distinct, well-compressing image: a gradient in a per-image colour plus a little noise."""
    rng = np.random.default_rng(i)
    ramp = np.linspace(0, 1, SIDE, dtype=np.float32)
    base = (ramp[:, None, None] * rng.uniform(40, 215, 3) + ramp[None, :, None] * rng.uniform(0, 40, 3))
    return (base + rng.integers(0, 8, (SIDE, SIDE, 3))).clip(0, 255).astype(np.uint8)


def write_folder(root: Path, count: int) -> Path:
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(_image(i)).save(root / CLASSES[i % len(CLASSES)] / f"{i:05d}.png", compress_level=1)
    (root / "cat" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing useful")
    return root


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("stream") / "images", COUNT)


@pytest.fixture()
def counted(monkeypatch):
    """Every decode of a file, by name (the lazy items call dataset_module.read_image)."""
    clear_decode_cache()
    names: list = []

    def counting(path):
        names.append(Path(path).name)
        return read_image(path)

    monkeypatch.setattr(dataset_module, "read_image", counting)
    yield names
    clear_decode_cache()


def _spec(side: int = 32) -> ModelSpec:
    return ModelSpec(id="toy", source="test", input_size=(3, side, side), mean=(0.5,) * 3, std=(0.25,) * 3,
                     class_names=list(CLASSES), weights_digest="toy")


def test_listing_decodes_nothing_and_skips_the_unreadable(big_folder, counted):
    ds = load_dataset("big", f"folder:{big_folder}")
    assert len(ds) == COUNT and ds.class_names == CLASSES and ds.lazy
    assert counted == []  # listed, not decoded
    assert [Path(f).name for f, _ in ds.skipped] == ["zz-broken.png"]
    assert "not a readable image" in ds.skipped[0][1] and "zz-broken.png" in ds.skipped[0][1]
    ds.digest()
    summary = ds.summary()  # shapes come from the headers
    assert counted == [] and summary["items"][0]["shape"] == [SIDE, SIDE, 3]
    first = ds.items[0].pixels
    again = ds.items[0].pixels
    assert counted == ["00000.png"] and again is first  # the second look is the bounded cache
    assert not first.flags.writeable  # shared, so nobody may scribble on it
    shapes = {it.pixels.shape for it in ds.items[1:200]}  # 199 more decodes, through the cache
    assert shapes == {(SIDE, SIDE, 3)} and len(counted) == 200
    assert len(dataset_module._DECODED._arrays) <= dataset_module.DECODE_CACHE_IMAGES  # bounded


def test_pixels_and_shapes_equal_the_eager_reader(big_folder, tmp_path):
    from conftest import write_image_folder

    ds = load_dataset("big", f"folder:{big_folder}")
    for it in ds.items[::191]:
        assert np.array_equal(it.pixels, read_image(it.path)) and it.shape == it.pixels.shape
        assert it.label == CLASSES.index(it.path.parent.name)
    # odd modes (gray, alpha, 16-bit) and an EXIF-turned photo: the header shape is the decoded one
    odd = write_image_folder(tmp_path / "odd")
    jpeg = Image.fromarray(np.zeros((20, 30, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: width and height swap when read upright
    jpeg.save(odd / "bee" / "turned.jpg", exif=exif.tobytes())
    for it in load_dataset("odd", f"folder:{odd}").items:
        assert it.shape == read_image(it.path).shape, it.id
    assert probe_image(odd / "bee" / "turned.jpg") == (30, 20, 3)


def _small_copy(big_folder: Path, dest: Path, n: int = 40) -> Path:
    for c in CLASSES:
        (dest / c).mkdir(parents=True)
    for c in CLASSES:
        for p in sorted((big_folder / c).glob("0*.png"))[: n // len(CLASSES)]:
            shutil.copy2(p, dest / c / p.name)
    return dest


def test_digest_follows_file_bytes_only(big_folder, tmp_path, counted):
    root = _small_copy(big_folder, tmp_path / "small")
    first = load_dataset("s", f"folder:{root}").digest()
    assert load_dataset("s", f"folder:{root}").digest() == first
    victim = sorted((root / "bee").iterdir())[3]
    os.utime(victim, (1, 1))  # a new mtime, the same bytes: same key
    assert load_dataset("s", f"folder:{root}").digest() == first
    original = victim.read_bytes()
    Image.fromarray(_image(99999)).save(victim, compress_level=1)  # one file's bytes change
    changed = load_dataset("s", f"folder:{root}").digest()
    assert changed != first
    victim.write_bytes(original)
    assert load_dataset("s", f"folder:{root}").digest() == first
    shutil.move(str(victim), root / "cat" / victim.name)  # same bytes, another label and path
    assert load_dataset("s", f"folder:{root}").digest() not in (first, changed)
    assert counted == []  # never decoded to be keyed


def test_digest_names_the_decoder(big_folder, tmp_path, monkeypatch):
    root = _small_copy(big_folder, tmp_path / "small", 8)
    before = load_dataset("s", f"folder:{root}").digest()
    monkeypatch.setattr(dataset_module, "decoder_version", lambda: "generator.data.imageio 2; Pillow x")
    assert load_dataset("s", f"folder:{root}").digest() != before


def test_array_datasets_keep_their_digest():
    import hashlib

    from generator.data.dataset import Dataset, ImageItem

    pixels = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)
    ds = Dataset(id="a", source="t", items=[ImageItem(id="x", pixels=pixels, label=1)])
    h = hashlib.sha256()  # the digest arrays had before folders became lazy
    h.update(b"x"), h.update(str(pixels.shape).encode()), h.update(pixels.tobytes()), h.update(b"1")
    assert not ds.lazy and ds.digest() == h.hexdigest()


def test_batched_scan_with_workers_equals_displayed(big_folder):
    from generator.pipeline.inputs import DisplayRows, display_batches, displayed

    ds = load_dataset("big", f"folder:{big_folder}", {"limit": 600})
    spec = _spec(40)
    whole = displayed(spec, ds, len(ds))
    seen = np.zeros(len(ds), bool)
    for sl, batch in display_batches(spec, ds, batch_size=128, workers=2):
        assert np.array_equal(batch, whole[sl])
        seen[sl] = True
    assert seen.all()
    rows = DisplayRows(spec, ds, [5, 3, 599, 3])
    assert np.array_equal(rows[:], whole[[5, 3, 599, 3]]) and np.array_equal(rows[1], whole[3])
    assert np.array_equal(rows.subset([2, 0])[:], whole[[599, 5]])
    assert rows[[]].shape == (0, 40, 40, 3)


def test_region_means_batched_equal_the_whole_set(big_folder):
    from generator.methods.surrogates.features import RegionIntensityFeatures
    from generator.pipeline.inputs import DisplayRows
    from generator.pipeline.stages.data_surrogate import gray, region_means

    ds = load_dataset("big", f"folder:{big_folder}", {"limit": 300})
    spec = _spec(24)
    rows = DisplayRows(spec, ds, np.arange(0, 300, 2))
    eager = RegionIntensityFeatures().fit(gray(rows[:]))
    streamed = RegionIntensityFeatures()
    means = region_means(streamed, rows, batch_size=32)
    streamed.fit_means(means)
    assert np.array_equal(streamed.thresholds, eager.thresholds)
    assert np.array_equal(streamed.transform_means(means).X, eager.transform(gray(rows[:])).X)


SCAN = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from generator.data.sources import load_dataset
    from generator.models.spec import ModelSpec
    from generator.pipeline.inputs import display_batches, model_input

    root, limit = sys.argv[1], int(sys.argv[2])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ds = load_dataset("d", f"folder:{root}", {"limit": limit})
    ds.digest()
    spec = ModelSpec(id="toy", source="test", input_size=(3, 128, 128), mean=(0.5,) * 3, std=(0.25,) * 3,
                     class_names=["a", "b", "c", "d"])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    out = []
    with torch.no_grad():
        for _, display in display_batches(spec, ds, batch_size=64, workers=2):
            out.append(model(model_input(spec, display, torch.device("cpu"))).argmax(1).numpy())
    print(json.dumps({"count": int(sum(len(o) for o in out)), "base_kb": base,
                      "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
""")


def _scan(root: Path, limit: int) -> dict:
    # MALLOC_MMAP_THRESHOLD_: glibc otherwise keeps freed multi-MB batch buffers on its heap,
    # whose fragmentation makes the peak wander by tens of MB from run to run; that is noise
    # about the allocator, not about what the code holds, so big buffers go straight to mmap.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    done = subprocess.run([sys.executable, "-c", SCAN, str(root), str(limit)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_folder(big_folder):
    small, large = _scan(big_folder, 200), _scan(big_folder, COUNT)
    assert (small["count"], large["count"]) == (200, COUNT)
    decoded_mb = (COUNT - 200) * SIDE * SIDE * 3 / 2**20  # what holding the extra images would cost
    growth_mb = (large["peak_kb"] - small["peak_kb"]) / 1024
    workers_mb = (large["children_kb"] - small["children_kb"]) / 1024
    # Flat, up to noise (a few MB measured): far below the 84 MB that holding the images would need.
    assert growth_mb < decoded_mb / 5, (small, large)
    assert workers_mb < decoded_mb / 5, (small, large)
