"""The method catalogue: one torch-free source of every method's metadata, typed parameters,
defaults, version and extra columns, read by the attribution classes, keys and pages."""

from __future__ import annotations

import re
import subprocess
import sys
import typing

import pytest

from generator import catalogue
from generator.catalogue import MethodEntry, Param, ParamError, effective_params, extra_columns

ATTRIBUTION = catalogue.names("attribution")


def test_catalogue_and_render_view_import_no_torch():
    code = ("import sys; import generator.catalogue, generator.render.methods_info, generator.validation; "
            "from generator.cli import main; assert main(['list', 'methods']) == 0; "
            "assert main(['list', 'params']) == 0; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_registered_class_has_an_entry_and_every_entry_a_class():
    from generator.methods.attribution import ATTRIBUTION_METHODS

    assert ATTRIBUTION_METHODS.names() == ATTRIBUTION
    for name in ATTRIBUTION:
        assert ATTRIBUTION_METHODS.describe(name) == catalogue.get(name).summary


@pytest.mark.parametrize("name", ATTRIBUTION)
def test_classes_run_with_exactly_the_catalogue_parameters(name):
    """The class's defaults and version come from the entry, and what an instance runs with
    normalises to what a key hashes."""
    from torch import nn

    from generator.methods.attribution import ATTRIBUTION_METHODS

    cls, entry = ATTRIBUTION_METHODS.get(name), catalogue.get(name)
    assert (cls.version, cls.defaults, cls.common_defaults) == (entry.version, entry.defaults, entry.common_defaults)
    instance = cls(nn.Identity())
    as_key = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(instance.params.items())}
    assert as_key == effective_params(name, {})
    given = {"precision": "bf16", **{p.name: p.default for p in entry.params}}
    assert cls(nn.Identity(), **given).params.keys() == effective_params(name, given).keys()


def test_a_class_that_declares_its_own_defaults_is_refused():
    from generator.methods.attribution.base import AttributionMethod, register

    class Drifted(AttributionMethod):
        name = "saliency"
        defaults = {"n_samples": 3}

    with pytest.raises(TypeError, match="come from the catalogue"):
        register(Drifted)


def test_effective_params_merge_normalise_and_sort():
    ip = effective_params("interior_gradients", {"alphas": (0.5, 1), "seed": 3.0})
    assert list(ip) == sorted(ip)
    assert ip["alphas"] == [0.5, 1.0] and isinstance(ip["alphas"], list)
    assert ip["seed"] == 3 and isinstance(ip["seed"], int)
    assert ip["alpha"] == 0.2 and ip["max_batch"] == 64 and ip["precision"] == "fp32"
    # one spelling per meaning: equal settings give equal dicts (and so equal keys)
    assert effective_params("integrated_gradients", {"steps": 16, "blur_sigma": 10}) == \
        effective_params("integrated_gradients", {"steps": 16.0})
    occ = effective_params("occlusion", {"window": 16.0, "stride": 0.25})
    assert occ["window"] == 16 and isinstance(occ["window"], int) and occ["stride"] == 0.25
    assert occ["max_batch"] == 256  # the method's own default overrides the family's
    assert effective_params("occlusion", {"baseline": 0})["baseline"] == 0.0
    assert effective_params("gradcam", {})["layer"] is None


@pytest.mark.parametrize("method, params, expected", [
    ("smoothgrad", {"n_sampels": 4}, "unknown parameter(s) ['n_sampels'] for smoothgrad; did you mean 'n_samples'?"),
    ("smoothgrad", {"n_samples": "many"}, "expected whole number >= 1, got 'many' (str)"),
    ("smoothgrad", {"n_samples": True}, "got True (bool)"),
    ("smoothgrad", {"n_samples": 2.5}, "expected whole number"),
    ("smoothgrad", {"n_samples": 0}, "expected whole number >= 1, got 0"),
    ("smoothgrad", {"noise_level": float("nan")}, "finite"),
    ("integrated_gradients", {"integration": "riemann"}, "did you mean 'riemann_left'?"),
    ("integrated_gradients", {"baseline": "blak"}, "did you mean 'black'?"),
    ("interior_gradients", {"alphas": []}, "non-empty"),
    ("interior_gradients", {"alphas": [0.5, 1.5]}, "item 1.5"),
    ("interior_gradients", {"alphas": [0.5, "x"]}, "item 'x' (str) is not a number"),
    ("occlusion", {"window": 1.5}, "pixels (int >= 1) or a fraction"),
    ("lrp_epsilon", {"canonize": "yes"}, "expected true or false"),
    ("gradcam", {"layer": 3}, "expected text or null"),
    ("saliency", {"precision": "fp16"}, "'fp16' is not one of fp32, bf16"),
])
def test_wrong_parameters_are_errors_with_suggestions(method, params, expected):
    problems = catalogue.check_params(method, params)
    assert len(problems) == 1 and problems[0].param == next(iter(params))
    assert expected in problems[0].message
    with pytest.raises(ParamError) as err:
        effective_params(method, params)
    assert expected in str(err.value)


def test_unknown_method_has_close_matches():
    with pytest.raises(KeyError, match="unknown attribution method 'gradcm'; did you mean 'gradcam'"):
        effective_params("gradcm", {})


def test_every_entry_is_complete_and_cites_a_paper():
    for entry in catalogue.entries():
        assert entry.family in catalogue.FAMILIES
        assert entry.title and entry.summary and entry.version and entry.limits, entry.name
        assert re.search(r"(19|20)\d\d", entry.citation), f"{entry.name}: the citation needs the paper's year"
        assert "\n" not in entry.summary
        if entry.family == "attribution":
            assert entry.formula and entry.read, entry.name
        else:
            assert entry.section and not entry.params, entry.name


def test_param_defaults_must_fit_their_own_types():
    with pytest.raises(ValueError, match="its default"):
        Param("steps", "int", 0, "points", minimum=1)
    with pytest.raises(ValueError, match="unknown kind"):
        Param("steps", "integer", 1, "points")
    with pytest.raises(ValueError, match="declared twice"):
        MethodEntry(name="x", family="attribution", title="X", summary="x", citation="2020",
                    params=(Param("a", "int", 1, ""), Param("a", "int", 2, "")))


def test_extra_columns_keep_the_pages_order_and_labels():
    columns = extra_columns()
    assert list(columns) == ["delta", "completeness_gap", "target_logit", "relevance_sum", "conservation"]
    assert all(isinstance(label, str) and isinstance(help_, str) for label, help_ in columns.values())
    assert list(extra_columns("integrated_gradients")) == ["delta", "completeness_gap"]
    assert list(extra_columns("lrp_alpha_beta")) == ["target_logit", "relevance_sum", "conservation"]
    assert extra_columns("saliency") == {}
    declared = {c for e in catalogue.entries("attribution") for c in e.columns}
    assert declared == set(columns), "every column belongs to some method"


@pytest.mark.parametrize("name", [n for n in ATTRIBUTION if catalogue.get(n).columns])
def test_declared_columns_are_what_the_method_reports(name):
    import torch
    from _attr_models import small_cnn, tiny_vit, transformer_only

    from generator.methods.attribution import ATTRIBUTION_METHODS

    torch.manual_seed(0)
    model = tiny_vit() if name in transformer_only() else small_cnn(bn=False)
    fast = {k: v for k, v in {"steps": 4}.items() if k in catalogue.get(name).all_params}
    result = ATTRIBUTION_METHODS.get(name)(model, **fast).attribute(torch.rand(2, 3, 16, 16), 1)
    assert set(catalogue.get(name).columns) <= set(result.extras)


def test_methods_info_is_a_view_of_the_catalogue():
    from generator.render.methods_info import METHOD_INFO, info

    assert sorted(METHOD_INFO) == ATTRIBUTION
    assert info("gradcam")["title"] == "Grad-CAM" and info("gradcam")["formula"].startswith("L^t")
    assert info("gradcam")["citation"].startswith("Selvaraju et al. 2017")
    assert info("old_method") == {"title": "Old method", "formula": "", "read": "", "limits": "", "citation": ""}


def test_config_choices_of_other_families_are_catalogued():
    from generator.settings.data import InfluenceSettings

    literal = InfluenceSettings.model_fields["methods"].annotation
    (item,) = typing.get_args(literal)
    assert set(typing.get_args(item)) <= set(catalogue.names("data"))
    assert {"selectivity", "sensitivity", "sanity", "roar", "localisation", "segmentation"} <= \
        set(catalogue.names("evaluation"))


def test_list_methods_shows_every_family_and_method(capsys):
    from generator.cli import main

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    blocks = {block.split(":", 1)[0]: block.splitlines()[1:] for block in out.split("\n\n") if block.strip()}
    for family in catalogue.FAMILIES:
        listed = {line.split()[0]: line for line in blocks[family]}
        assert list(listed) == [e.name for e in catalogue.entries(family)]
        for entry in catalogue.entries(family):
            assert entry.summary in listed[entry.name]
    assert main(["list", "params"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  n_samples\s+50\s+whole number >= 1", out, re.M)
