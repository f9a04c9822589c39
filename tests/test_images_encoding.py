"""The site's image encoders: deterministic bytes (renders stay byte-stable) and no failure on
pictures the JPEG optimiser cannot buffer."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from generator.render.images import jpeg_bytes, webp_bytes


def test_noisy_picture_encodes_as_jpeg_and_decodes_to_its_size():
    noise = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    data = jpeg_bytes(noise)
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.shape == noise.shape
    # lossy, but the picture is the picture: mean absolute error well under the noise's own spread
    assert np.abs(decoded.astype(int) - noise.astype(int)).mean() < 40


def test_webp_is_deterministic_and_smaller_than_raw():
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (120, 1, 3))
    first, second = webp_bytes(ramp), webp_bytes(ramp)
    assert first == second
    assert Image.open(io.BytesIO(first)).format == "WEBP"
    assert len(first) < ramp.nbytes / 10
