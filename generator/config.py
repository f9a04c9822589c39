"""The report configuration: YAML validated into typed objects.

Errors name the file, the line and the field, and say what was expected, e.g.::

    report.yaml:12: models[0].source: unknown model source 'torchvison'; did you mean 'torchvision'?

This module imports no torch: the renderer reads the same configuration.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from generator.settings.blocks import BlocksSettings
from generator.settings.compare import CompareSettings
from generator.settings.concepts import ConceptsSettings
from generator.settings.data import DataSettings
from generator.settings.evaluation import EvaluationSettings
from generator.settings.features import FeaturesSettings

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
DEFAULT_CONFIG = Path(__file__).parent / "defaults" / "default.yaml"


class ConfigError(ValueError):
    """A configuration problem; ``str()`` gives ``file:line: field: message`` lines."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CardMetadata(_Strict):
    """Model-card fields after Mitchell et al. 2019, "Model Cards for Model Reporting".

    Anything left empty is shown as missing on the site, never invented.
    """

    description: Optional[str] = None
    owners: List[str] = Field(default_factory=list)
    version: Optional[str] = None
    date: Optional[str] = None
    licence: Optional[str] = None
    citation: Optional[str] = None
    contact: Optional[str] = None
    references: List[str] = Field(default_factory=list)
    intended_use: Optional[str] = None
    intended_users: Optional[str] = None
    out_of_scope_uses: Optional[str] = None
    factors: Optional[str] = None
    metrics: Optional[str] = None
    training_data: Optional[str] = None
    evaluation_data: Optional[str] = None
    ethical_considerations: Optional[str] = None
    limitations: Optional[str] = None
    caveats_and_recommendations: Optional[str] = None


class OutputConfig(_Strict):
    site_dir: str = "site"
    work_dir: str = ".modelcard"  # artifacts and generated pages


class ModelConfig(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    source: str
    title: Optional[str] = None
    weights: Optional[str] = None
    datasets: Optional[List[str]] = None  # dataset ids to run on; default: all with matching channels
    layers: Optional[List[str]] = None
    cam_layer: Optional[str] = None
    embedding_layer: Optional[str] = None
    input_size: Optional[Tuple[int, int, int]] = None
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    resize: Optional[int] = None
    interpolation: Optional[Literal["bilinear", "bicubic", "nearest"]] = None
    class_names: Optional[Union[List[str], str]] = None  # a list, or a text file with one name a line
    num_classes: Optional[int] = Field(default=None, ge=1)
    training: Optional[Dict[str, Any]] = None  # for models trained on first use
    card: CardMetadata = Field(default_factory=CardMetadata)

    @field_validator("source")
    @classmethod
    def _source_shape(cls, value: str) -> str:
        if not re.match(r"^[a-z_]+(:.*)?$", value):
            raise ValueError("expected '<source>:<argument>', e.g. 'embedded:efficientnet_lite0' or 'timm:resnet50'")
        return value


class DatasetConfig(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    source: str
    title: Optional[str] = None
    options: Dict[str, Any] = Field(default_factory=dict)


class PredictionsConfig(_Strict):
    top_k: int = Field(default=5, ge=1, le=20)


class OutcomeConfig(_Strict):
    """Attribution methods ("why this image got this label").

    ``methods`` is what every model runs; ``methods_by_model`` (model id -> methods) *replaces*
    that list for the models it names, so one model can run a CPU-sized subset, or a method the
    others lack (e.g. one defined only for vision transformers). ``params`` may be given for any
    method some model runs; ids and names are checked by :mod:`generator.validation`.
    """

    enabled: bool = True
    methods: List[str] = Field(default_factory=lambda: ["saliency", "gradcam"])
    methods_by_model: Dict[str, List[str]] = Field(default_factory=dict)  # model id -> its methods
    params: Dict[str, Dict[str, Any]] = Field(default_factory=dict)  # method -> parameters
    images: int = Field(default=8, ge=1)  # at most this many images of each dataset
    target: Union[Literal["predicted", "label"], int, str] = "predicted"

    @model_validator(mode="after")
    def _params_for_listed(self) -> "OutcomeConfig":
        for model_id, methods in self.methods_by_model.items():
            repeated = sorted({m for m in methods if methods.count(m) > 1})
            if repeated:
                raise ValueError(f"methods_by_model[{model_id!r}] lists {repeated} more than once")
        stray = sorted(set(self.params) - set(self.all_methods()))
        if stray:
            raise ValueError(f"params given for method(s) {stray} that are not in methods {self.methods}"
                             + (f" nor in methods_by_model {dict(self.methods_by_model)}" if self.methods_by_model
                                else ""))
        return self

    def methods_for(self, model_id: str) -> List[str]:
        """The methods computed for model ``model_id``: its ``methods_by_model`` entry, else ``methods``."""
        return list(self.methods_by_model.get(model_id, self.methods))

    def all_methods(self, model_ids: Optional[List[str]] = None) -> List[str]:
        """Every method some model runs (of ``model_ids``; default: ``methods`` and every
        ``methods_by_model`` entry), in first-mention order."""
        lists = ([self.methods_for(m) for m in model_ids] if model_ids is not None
                 else [self.methods, *self.methods_by_model.values()])
        return list(dict.fromkeys(m for methods in lists for m in methods))


class ReportConfig(_Strict):
    title: str = "Model card"
    description: Optional[str] = None
    output: OutputConfig = Field(default_factory=OutputConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    card: CardMetadata = Field(default_factory=CardMetadata)
    models: List[ModelConfig] = Field(min_length=1)
    datasets: List[DatasetConfig] = Field(min_length=1)
    predictions: PredictionsConfig = Field(default_factory=PredictionsConfig)
    outcome: OutcomeConfig = Field(default_factory=OutcomeConfig)
    features: FeaturesSettings = Field(default_factory=FeaturesSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    blocks: BlocksSettings = Field(default_factory=BlocksSettings)
    compare: CompareSettings = Field(default_factory=CompareSettings)
    concepts: ConceptsSettings = Field(default_factory=ConceptsSettings)
    # Folders of hand-written pages merged into the site, in order; "builtin:<name>" is a folder
    # of the project's site_src/ (common: about and publishing; course: the lecture).
    site_src: List[str] = Field(default_factory=lambda: ["builtin:common"])

    _path: Path = PrivateAttr(default=Path("<default>"))
    _lines: Dict[Tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> "ReportConfig":
        for what, items in (("model", self.models), ("dataset", self.datasets)):
            ids = [item.id for item in items]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{what} ids must be unique; repeated: {dupes}")
        dataset_ids = [d.id for d in self.datasets]
        for model in self.models:
            for ds in model.datasets or []:
                if ds not in dataset_ids:
                    import difflib

                    close = difflib.get_close_matches(ds, dataset_ids, n=3)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ValueError(f"model {model.id!r} names dataset {ds!r}, which is not defined{hint} "
                                     f"(defined: {dataset_ids})")
        return self

    @property
    def path(self) -> Path:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path.name != "<default>" else Path.cwd()

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder (or the cwd for the default)."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def site_dir(self) -> Path:
        return self.resolve(self.output.site_dir)

    @property
    def work_dir(self) -> Path:
        return self.resolve(self.output.work_dir)

    def where(self, *loc: Any) -> str:
        """``file:line`` of a field, for error messages of later checks."""
        return f"{self._path}:{_line_for(self._lines, loc)}"

    def error(self, loc: Tuple[Any, ...], message: str) -> ConfigError:
        return ConfigError(f"{self.where(*loc)}: {_format_loc(loc)}: {message}")


def _format_loc(loc: Tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_map(node: yaml.Node, path: Tuple[Any, ...], lines: Dict[Tuple[Any, ...], int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), lines)


# A config is a few hundred nodes; a "billion laughs" document (anchors nesting anchors) expands
# to billions. Walking or validating it would hang and eat memory, so its expanded size is
# counted first, on the composed node graph where every alias is one shared node.
MAX_EXPANDED_NODES = 100_000


def _expanded_size(node: yaml.Node, memo: Dict[int, int]) -> int:
    """Number of nodes ``node`` stands for once every alias is expanded (memoised, so linear)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        total = 1
    memo[id(node)] = total
    return total


def _line_for(lines: Dict[Tuple[Any, ...], int], loc: Tuple[Any, ...]) -> int:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def parse_config(text: str, path: Union[str, Path] = "<string>") -> ReportConfig:
    """Validate YAML text; raise :class:`ConfigError` listing every problem with its line."""
    path = Path(path)
    def not_yaml(exc: yaml.YAMLError) -> ConfigError:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}" if mark is not None else "?"
        return ConfigError(f"{path}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise not_yaml(exc) from None
    if root is not None:
        size = _expanded_size(root, {})
        if size > MAX_EXPANDED_NODES:
            raise ConfigError(f"{path}:1: refused: YAML aliases expand this file to {size:,} values "
                              f"(at most {MAX_EXPANDED_NODES:,} allowed); a report config needs no nested "
                              "anchors of this size")
    try:
        # Built from the node graph just checked, so the text is parsed once.
        data = yaml.SafeLoader("").construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise not_yaml(exc) from None
    lines: Dict[Tuple[Any, ...], int] = {}
    if root is not None:
        _line_map(root, (), lines)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of settings at the top level, got {type(data).__name__}")
    try:
        config = ReportConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown field {loc[-1]!r}" + _suggest_field(loc, config_model_fields(loc[:-1]))
            elif err["type"] == "missing":
                msg = "this field is required"
            problems.append(f"{path}:{_line_for(lines, loc)}: {_format_loc(loc)}: {msg}")
        raise ConfigError("\n".join(problems)) from None
    config._path = path
    config._lines = lines
    return config


def config_model_fields(loc: Tuple[Any, ...]) -> List[str]:
    """The field names allowed at ``loc`` (for "did you mean" hints)."""
    model: Any = ReportConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _suggest_field(loc: Tuple[Any, ...], known: List[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(loc[-1]), known, n=2)
    return (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "") + \
        (f" (allowed: {', '.join(known)})" if known else "")


def load_config(path: Optional[Union[str, Path]] = None) -> ReportConfig:
    """Load the YAML file at ``path``, or the embedded default report when ``path`` is None."""
    if path is None:
        config = parse_config(DEFAULT_CONFIG.read_text(), DEFAULT_CONFIG)
        config._path = Path("<default>")
        return config
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (expected a YAML report config)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          "save the config as UTF-8") from None
    return parse_config(text.removeprefix("\ufeff"), path)
