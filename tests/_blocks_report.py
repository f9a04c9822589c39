"""A tiny report with the Building Blocks stage on (shared by the blocks stage/page tests)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from conftest import TINY_MODEL_MODULE, write_image_folder

BLOCKS_SECTION = textwrap.dedent('''
    blocks:
      enabled: true
      max_images: 2
      layers: [relu2, pool]
      top_k: 3
      n_groups: 3
      n_channels: 4
      icon_size: 16
      grid_icon_size: 16
      icon_steps: 2
''')


def write_blocks_report(root: Path) -> Path:
    """The conftest ``tiny_report`` (a tiny CNN on a folder of images) plus a ``blocks`` section
    on two of its layers: relu2 (16 x 16 x 16) and the pooled 1 x 1 x 16 layer above it."""
    images = write_image_folder(root / "images")
    (root / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    config = root / "report.yaml"
    config.write_text(textwrap.dedent(f'''
        title: "Tiny blocks"
        device: cpu
        models:
          - id: tiny
            source: python:tinymodel:build
            title: "Tiny <script>alert(1)</script> CNN"
        datasets:
          - id: pics
            source: folder:{images}
        outcome:
          methods: [saliency]
          images: 2
    ''') + BLOCKS_SECTION)
    return config
