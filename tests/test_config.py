"""Config validation: errors name the file, the line and the field, with close matches."""

from __future__ import annotations

import pytest

from generator.config import ConfigError, load_config, parse_config
from generator.pipeline.validate import validate_names

VALID = """\
title: ok
models:
  - id: m
    source: embedded:efficientnet_lite0
datasets:
  - id: d
    source: samples
"""


def test_default_config_is_valid():
    config = load_config()
    assert [m.id for m in config.models] == ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
                                             "fashion-cnn"]
    assert config.outcome.methods
    # the two compared models run CPU-sized subsets; every compared method is computed for Lite0
    # and at least one other model, so each has a pair to compare
    assert config.outcome.methods_for("efficientnet-lite2") == ["gradcam", "integrated_gradients", "occlusion"]
    assert config.outcome.methods_for("efficientnet-lite1") == ["gradcam", "occlusion"]
    for method in config.compare.methods or []:
        assert method in config.outcome.methods_for("efficientnet-lite0")
        assert any(method in config.outcome.methods_for(m) for m in ("efficientnet-lite1", "efficientnet-lite2"))
    validate_names(config)


def test_unknown_field_names_line_and_suggests():
    text = VALID.replace("    source: samples", "    source: samples\n    optoins: {}")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "r.yaml")
    msg = str(err.value)
    assert "r.yaml:8:" in msg and "datasets[0].optoins" in msg and "did you mean 'options'" in msg


def test_wrong_type_and_enum():
    text = VALID + "seed: many\ndevice: gpu\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "r.yaml")
    lines = str(err.value).splitlines()
    assert any(line.startswith("r.yaml:8: seed:") for line in lines)
    assert any(line.startswith("r.yaml:9: device:") and "'auto', 'cpu' or 'cuda'" in line for line in lines)


def test_missing_required_field():
    with pytest.raises(ConfigError) as err:
        parse_config("title: x\ndatasets: [{id: d, source: samples}]\n", "r.yaml")
    assert "models: this field is required" in str(err.value)


def test_invalid_yaml_reports_line():
    with pytest.raises(ConfigError) as err:
        parse_config("title: [unclosed\nmodels: x\n", "bad.yaml")
    assert str(err.value).startswith("bad.yaml:") and "not valid YAML" in str(err.value)


def test_unknown_dataset_reference():
    text = VALID.replace("    source: embedded:efficientnet_lite0",
                         "    source: embedded:efficientnet_lite0\n    datasets: [dd]")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "r.yaml")
    assert "names dataset 'dd'" in str(err.value) and "did you mean 'd'" in str(err.value)


def test_duplicate_ids():
    text = VALID + "  - id: d\n    source: samples\n"
    with pytest.raises(ConfigError, match="repeated: \\['d'\\]"):
        parse_config(text, "r.yaml")


def test_unknown_names_get_close_matches_with_lines():
    text = VALID.replace("embedded:efficientnet_lite0", "torchvison:resnet18") + \
        "outcome:\n  methods: [saliency, gradcm]\n"
    config = parse_config(text, "r.yaml")
    with pytest.raises(ConfigError) as err:
        validate_names(config)
    msg = str(err.value)
    assert "r.yaml:4: models[0].source: unknown model source 'torchvison'; did you mean 'torchvision'" in msg
    assert "r.yaml:9: outcome.methods[1]: unknown attribution method 'gradcm'; did you mean 'gradcam'" in msg


def test_unknown_method_parameter():
    text = VALID + "outcome:\n  methods: [smoothgrad]\n  params:\n    smoothgrad: {n_sampels: 4}\n"
    config = parse_config(text, "r.yaml")
    with pytest.raises(ConfigError, match="unknown parameter\\(s\\) \\['n_sampels'\\] for smoothgrad"):
        validate_names(config)


def test_params_for_unlisted_method():
    text = VALID + "outcome:\n  methods: [saliency]\n  params:\n    gradcam: {}\n"
    with pytest.raises(ConfigError, match="not in methods"):
        parse_config(text, "r.yaml")


def test_missing_file():
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("/nonexistent/report.yaml")
