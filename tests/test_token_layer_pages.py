"""What the features and Building Blocks pages say about a vision transformer's token layers.

The pages are built by the real page builders from records and artifact files held in memory
(no run, no mkdocs): feature-visualisation records with and without the token fields of the
render settings (``size_note``, ``tokens``) and DeepDream notes; Building Blocks summaries from
:func:`summary_json` on a tiny timm ViT (a residual-stream layer and an MLP layer) and on a tiny
CNN. With the fields the pages name the patch grid, the class token's share and (on the residual
stream) why the spatial map is about zero, every user string escaped; without them a CNN's pages
carry none of that text.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List

import numpy as np
import pytest

from generator.records import parse_record
from generator.render.pages import SiteContext
from generator.render.pages.blocks import blocks_pages
from generator.render.pages.features import feature_pages
from generator.render.site import SiteWriter, environment
from generator.render.text import md_escape

EVIL = "<script>x</script>"
TOKEN_WORDS = ("Token layer", "patch token", "class token", "LayerNorm", "residual-stream", "Input size",
               "Objectives that say more", "not drawn")

_keys = itertools.count()


class FakeArtifact:
    """What page code reads of a manifest artifact: ``record``, ``rec``, ``key`` and its files."""

    def __init__(self, kind: str, record: Dict[str, Any], files: Dict[str, Any]):
        self.kind, self.record, self.files = kind, record, files
        self.key = f"{kind}-{next(_keys)}"
        self.rec = parse_record(kind, record)  # the record validates against its kind's schema

    def load_npz(self, name: str) -> Dict[str, np.ndarray]:
        return self.files[name]

    def load_json(self, name: str) -> Dict[str, Any]:
        return self.files[name]


class FakeManifest:
    def __init__(self, artifacts: List[FakeArtifact], models: List[str]):
        self.artifacts, self.models = artifacts, models

    def find(self, kind: str, **labels: Any) -> List[FakeArtifact]:
        return [a for a in self.artifacts if a.kind == kind and all(a.record.get(k) == v for k, v in labels.items())]

    def one(self, kind: str, **labels: Any):
        found = self.find(kind, **labels)
        return found[0] if found else None


def build(tmp_path, builder, artifacts: List[FakeArtifact], models: List[str]) -> Dict[str, str]:
    writer = SiteWriter(tmp_path / "docs", environment())
    site = SiteContext(config=None, manifest=FakeManifest(artifacts, models), writer=writer,
                       models={m: {"id": m, "title": f"{m} {EVIL}", "page": None} for m in models})
    builder(site)
    return writer.pages


def images(n: int, side: int = 8) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# feature visualisation

SIZE_NOTE = (f"model 'tiny_vit' refuses 48x48 px inputs (Input height (48) doesn't match model (32) {EVIL}); "
             "rendered at its own input size, 32x32 px, instead of the 48x48 px asked")
TOKEN_NOTE = "tokens on a 4x4 patch grid; class token left out (not a place in the image)"


def feature_artifacts(tokens: bool) -> List[FakeArtifact]:
    layer = "blocks.1" if tokens else "relu2"
    settings: Dict[str, Any] = {"steps": 8, "size": [32, 32], "lr": 0.05, "param": "fft", "seed": 0}
    if tokens:
        settings.update(size_requested=[48, 48], size_note=SIZE_NOTE, tokens={layer: TOKEN_NOTE})
    rendered = {"descriptions": ["channel(c)"] * 2, "description": "channel", "values": [1.5, 2.5],
                "settings": settings}
    gallery = FakeArtifact("features_gallery", {"model": "m", "layer": layer, "channels": [0, 1],
                                                "layer_channels": 4, **rendered}, {"images": {"images": images(2)}})
    classes = FakeArtifact("features_classes", {"model": "m", "classes": [0, 1], "names": ["cat", "dog"],
                                                "source": "configured", "dataset": "pics", **rendered},
                           {"images": {"images": images(2)}})
    suffix = f" over its patch tokens; {SIZE_NOTE}" if tokens else ""
    dream = FakeArtifact("features_deepdream", {
        "model": "m", "dataset": "pics", "layers": [layer], "items": ["a"], "titles": ["photo a"], "size": 32,
        "steps": 2, "octaves": 1, "jitter": 2,
        "descriptions": [f"layer({layer}): mean squared activation of {layer}{suffix}"]},
        {"dreams": {"dreams": images(1)[None], "originals": images(1)}})
    return [gallery, classes, dream]


@pytest.fixture(scope="module")
def vit_features(tmp_path_factory):
    return build(tmp_path_factory.mktemp("fv_vit"), feature_pages, feature_artifacts(True), ["m"])


@pytest.fixture(scope="module")
def cnn_features(tmp_path_factory):
    return build(tmp_path_factory.mktemp("fv_cnn"), feature_pages, feature_artifacts(False), ["m"])


def test_feature_pages_say_the_size_used_and_how_token_layers_were_read(vit_features):
    size = f"Input size: {md_escape(SIZE_NOTE)}."
    assert "&lt;script&gt;x&lt;/script&gt;\\);" in size and "tiny\\_vit" in size
    token = (f"Token layer `blocks.1`, read as {md_escape(TOKEN_NOTE)}: its units are averaged over the patch "
             "tokens.")
    for page in ("features/m/blocks-1/index.md", "features/m/blocks-1/unit-0.md", "features/m/index.md"):
        text = vit_features[page]
        assert size in text and token in text, page
        assert "\n\n" + size + "\n\n" + token + "\n" in text, page  # paragraphs of their own
    assert size in vit_features["features/m/classes.md"]
    dream = vit_features["features/m/deepdream.md"]
    assert "Objectives that say more than the plain mean squared activation" in dream
    assert (f"- `blocks.1`: {md_escape('layer(blocks.1): mean squared activation of blocks.1 over its patch tokens')}"
            f"; {md_escape(SIZE_NOTE)}\n") in dream
    assert all(EVIL not in text for text in vit_features.values())  # escaped everywhere


def test_cnn_feature_pages_carry_no_token_text(cnn_features):
    for page, text in cnn_features.items():
        assert not any(w in text for w in TOKEN_WORDS), page
    gallery = cnn_features["features/m/relu2/index.md"]
    assert "Click a channel for its unit page.\n\n" in gallery  # the sentence ends its paragraph, as before


# ---------------------------------------------------------------------------------------------
# Building Blocks

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from generator.methods import featurevis as fv  # noqa: E402
from generator.methods.blocks import building_blocks, summary_json  # noqa: E402
from generator.models.spec import ModelSpec  # noqa: E402
from generator.models.tokens import infer_token_layout  # noqa: E402

NAMES = [f"c{i} {EVIL}" for i in range(5)]


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             embed_dim=32, num_heads=2, num_classes=5).eval()


def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def blocks_artifact(model, spec, layer: str, upper) -> FakeArtifact:
    """One (image, layer) artifact the way the blocks stage writes it (icons: random pixels)."""
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    bb = building_blocks(model, x, layer, top_k=3, n_channels=4, n_groups=3, upper_layer=upper,
                         layout=fv.spec_layout(spec))
    summary = summary_json(bb, spec.class_names)
    h, w = bb.grid.grid_shape
    k = bb.groups.k
    arrays = {"pixels": images(1, 32)[0], "grid_icons": images(h * w), "group_icons": images(k),
              "magnitude": bb.grid.magnitude.numpy().astype(np.float32),
              "class_maps": bb.attribution.spatial.detach().numpy().astype(np.float32),
              "group_maps": bb.groups.spatial.numpy().astype(np.float32)}
    if bb.upper_groups is not None:
        arrays["upper_group_icons"] = images(bb.upper_groups.k)
    record = {"model": "m", "dataset": "pics", "image": "a", "title": "photo a", "licence": None, "layer": layer,
              "upper": upper, "grid": [h, w], "top_classes": [int(c) for c in bb.top_classes],
              "top_names": [spec.class_names[c] for c in bb.top_classes], "icons": {}, "group_mode": bb.groups.mode}
    return FakeArtifact("blocks", record, {"summary": summary, "arrays": arrays})


@pytest.fixture(scope="module")
def vit_blocks(tmp_path_factory):
    model = tiny_vit()
    layout = infer_token_layout(model, (3, 32, 32))
    spec = ModelSpec(id="m", source="test", input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3,
                     class_names=NAMES, tokens=layout.to_json())
    # an MLP layer (blocks.0.mlp.fc1), then the residual stream after its block (blocks.0)
    arts = [blocks_artifact(model, spec, "blocks.0.mlp.fc1", "blocks.0"),
            blocks_artifact(model, spec, "blocks.0", None)]
    return build(tmp_path_factory.mktemp("bb_vit"), blocks_pages, arts, ["m"]), arts


@pytest.fixture(scope="module")
def cnn_blocks(tmp_path_factory):
    model = tiny_cnn()
    spec = ModelSpec(id="m", source="test", input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3,
                     class_names=NAMES)
    arts = [blocks_artifact(model, spec, "1", "3"), blocks_artifact(model, spec, "3", None)]
    assert all("tokens" not in a.files["summary"] for a in arts)
    return build(tmp_path_factory.mktemp("bb_cnn"), blocks_pages, arts, ["m"])


def sections(text: str) -> Dict[str, str]:
    """A page's text per '## Layer ...' section."""
    parts = text.split("\n## Layer ")
    return {p.split("\n", 1)[0].split("*Token layer*")[0].strip(): p for p in parts[1:]}


def test_attribution_page_splits_the_total_into_patch_grid_and_class_token(vit_blocks):
    pages, arts = vit_blocks
    page = pages["blocks/m/pics/a-attribution.md"]
    assert EVIL not in page and "&lt;script&gt;" in page
    by_layer = sections(page)
    for art in arts:
        s = art.files["summary"]
        text = by_layer[art.record["layer"].replace(".", "\\.")]
        assert "*Token layer*, read as tokens on a 4x4 patch grid; class token left out" in text
        assert "the class token is not a place in the image, so it has no cell" in text
        for sa, part in zip(s["spatial_attribution"], s["tokens"]["attribution"]):
            assert part["class"] == sa["class"]
            # the caption: total, then its patch-grid part and the class token's part
            assert (f"total {sa['total']:+.3g}: patch grid {part['grid']:+.3g}, class token "
                    f"{part['prefix']:+.3g}</figcaption>") in text
        first, part = s["spatial_attribution"][0], s["tokens"]["attribution"][0]
        assert md_escape(f"Of that total the patch grid (the map) carries {part['grid']:+.3g} and the class token "
                         f"{part['prefix']:+.3g}; the class token is not a place in the image") in text
        assert first["class"] == part["class"]


def test_residual_stream_layer_says_its_spatial_map_is_zero_by_construction(vit_blocks):
    pages, arts = vit_blocks
    by_layer = sections(pages["blocks/m/pics/a-attribution.md"])
    mlp, stream = by_layer["blocks\\.0\\.mlp\\.fc1"], by_layer["blocks\\.0"]
    # the data says so: next to the channel attribution, every cell of the residual stream's maps is ~0, the
    # MLP layer's are not
    def share(art):
        s = art.files["summary"]
        cells = max(np.abs(np.asarray(sa["map"])).max() for sa in s["spatial_attribution"])
        channels = max(abs(v) for r in s["channel_attribution"] for _, v in r["support"] + r["oppose"])
        return cells / channels

    assert share(arts[1]) < 1e-4 and share(arts[0]) > 1e-2
    assert "about zero by construction (a residual-stream layer read through LayerNorm" in stream
    assert md_escape("every later layer reads the stream through a LayerNorm, which ignores the input's scale, so "
                     "activation x gradient sums to zero over each token's channels") in stream
    assert md_escape("Read the channel attribution instead, or choose an MLP layer") in stream
    assert "LayerNorm" not in mlp and "about zero" not in mlp


def test_groups_page_shows_the_class_tokens_share_and_a_patch_grid_residual(vit_blocks):
    pages, arts = vit_blocks
    page = pages["blocks/m/pics/a-groups.md"]
    assert EVIL not in page
    by_layer = sections(page)
    for art in arts:
        s = art.files["summary"]
        text = by_layer[art.record["layer"].replace(".", "\\.")]
        assert "The groups factorise the patch tokens only: the residual is the part of the patch grid's" in text
        assert "| Class | Groups | Residual (patch grid) | class token | Total |" in text
        residual = dict(s["group_residual"])
        for sa, part in zip(s["spatial_attribution"], s["tokens"]["attribution"]):
            c = sa["class"]
            groups = sum(dict(g["classes"])[c] for g in s["groups"])
            assert groups + residual[c] + part["prefix"] == pytest.approx(sa["total"], rel=1e-3, abs=1e-5)
            row = (f"| c{c} &lt;script&gt;x&lt;/script&gt; | {groups:+.3g} | {residual[c]:+.3g} | "
                   f"{part['prefix']:+.3g} | {sa['total']:+.3g} |")
            assert row in text
        assert md_escape("the part of the patch grid's activation the 3 groups do not reconstruct") in text
        assert md_escape("The class token, not a place in the image, belongs to no group and to no residual") in text
    assert ("what the class token of blocks\\.0\\.mlp\\.fc1 carries into the upper groups is not drawn"
            in by_layer["blocks\\.0\\.mlp\\.fc1"])
    assert "*Token layer*" in pages["blocks/m/pics/a-dictionary.md"]


def test_cnn_blocks_pages_carry_no_token_text(cnn_blocks):
    for page, text in cnn_blocks.items():
        assert EVIL not in text, page
        assert not any(w in text for w in TOKEN_WORDS + ("patch grid",)), page
    attribution = cnn_blocks["blocks/m/pics/a-attribution.md"]
    assert "</figcaption>" in attribution and ": patch grid" not in attribution
    assert "## Layer 1\n\n" in attribution  # the heading is followed by the page as before
