"""Artifact keys, computed in one place from everything that determines a result.

An artifact is reused whenever its key exists, so a key that misses one determinant shows a
stale result as current. Every key therefore covers:

* the artifact kind, the kind's **schema version** (how its record is laid out, from the typed
  records) and the producer's own version of it (a stage's ``VERSION``);
* the **method version** (an attribution method's ``version``), where there is one;
* the **effective parameters**: defaults merged with what the user wrote, normalised, so that
  changing a default recomputes, and writing a default out explicitly does not;
* the **inputs**: digests of the data and keys of the artifacts the result is derived from;
* the **model identity**: its id, its weights digest *and* its code digest (two models with the
  same weights but a different ``forward`` must not share results), and the spec fields that
  shape its inputs (mean, std, size) and its default layers;
* a **code fingerprint** of the family of code that computed it: sha256 of the source files,
  so an edit to feature visualisation recomputes feature artifacts only, and reinstalling the
  same files recomputes nothing.

This module imports no torch: render, diff and ``modelcard check`` may import it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from generator.artifacts.store import artifact_key

#: Bumped when the layout of the key payload itself changes (not for any one kind).
KEY_FORMAT = "2"

_PACKAGE = Path(__file__).resolve().parent.parent  # the ``generator`` folder

# Code shared by everything that runs a model on images: preprocessing, hooks, batching, the
# finiteness checks. A change here can change any number, so it is in every torch family.
_MODEL_CODE = ("engine", "pipeline/inputs.py", "pipeline/finite.py", "models/spec.py", "models/tokens.py")

#: Family -> source paths (files or folders, relative to the package) whose contents determine
#: that family's results. The stage modules are listed too: they build the records.
FAMILIES: Dict[str, Tuple[str, ...]] = {
    "dataset": ("data", "pipeline/run.py"),
    "model": ("models/spec.py", "pipeline/run.py"),
    "training": ("models/fashion_cnn.py", "models/fashion_training.py"),
    "predictions": _MODEL_CODE + ("pipeline/stages/predictions.py",),
    "attribution": _MODEL_CODE + ("methods/attribution", "pipeline/stages/outcome.py",
                                  "pipeline/stages/segmentation.py"),
    "evaluation": _MODEL_CODE + ("methods/attribution", "evaluation", "models/fashion_cnn.py",
                                 "pipeline/stages/evaluation.py", "pipeline/stages/evaluation_roar.py"),
    "features": _MODEL_CODE + ("methods/featurevis", "data/imageio.py", "pipeline/stages/features.py",
                               "pipeline/stages/features_compute.py"),
    "blocks": _MODEL_CODE + ("methods/blocks", "methods/featurevis", "data/imageio.py",
                             "pipeline/stages/blocks.py"),
    "compare": ("methods/compare", "pipeline/stages/compare.py", "records/compare.py"),
    "similarity": _MODEL_CODE + ("methods/compare", "methods/featurevis/spatial.py",
                                 "pipeline/stages/compare_similarity.py", "records/similarity.py"),
    "data": _MODEL_CODE + ("methods/data", "methods/surrogates", "pipeline/stages/data_common.py",
                           "pipeline/stages/data_prototypes.py", "pipeline/stages/data_influence.py",
                           "pipeline/stages/data_surrogate.py"),
    "concepts": _MODEL_CODE + ("methods/concepts", "pipeline/stages/concepts.py", "records/concepts.py"),
}


# --- normalisation ---------------------------------------------------------------------------

def normalise(value: Any) -> Any:
    """The JSON form a key hashes: mappings sorted by key, tuples and sets as lists, numpy
    scalars as Python numbers, paths as text, and whole floats as ints (``steps: 50.0`` runs
    exactly like ``steps: 50``, so it must not look like a new setting)."""
    if isinstance(value, Mapping):
        return {str(k): normalise(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted((normalise(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":  # numpy scalar, without importing numpy
        value = item()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


# --- code fingerprints -----------------------------------------------------------------------

def _source_files(relative: str) -> list:
    path = _PACKAGE / relative
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    return []


@functools.lru_cache(maxsize=None)
def _fingerprint_of(paths: Tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    found = 0
    for relative in paths:
        for file in _source_files(relative):
            found += 1
            # The path relative to the package, not the absolute one: the same files installed
            # elsewhere (another venv, a reinstall) give the same fingerprint.
            digest.update(file.relative_to(_PACKAGE).as_posix().encode() + b"\0")
            digest.update(file.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    if not found:
        # Installed without sources (bytecode only): the package version is all we can go by.
        from generator import __version__

        digest.update(f"version {__version__}".encode())
    return digest.hexdigest()[:16]


def code_fingerprint(family: str) -> str:
    """sha256 (16 hex digits) of the source files of ``family`` (see :data:`FAMILIES`).

    Content-based and cached per process: the same files give the same fingerprint wherever
    they are installed, and an edit recomputes only the families whose files it touches."""
    try:
        paths = FAMILIES[family]
    except KeyError:
        close = difflib.get_close_matches(family, list(FAMILIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown code family {family!r}{hint} (known: {sorted(FAMILIES)})") from None
    return _fingerprint_of(paths)


# --- schema versions -------------------------------------------------------------------------

def schema_version(kind: str, default: str = "") -> str:
    """The schema version of ``kind``'s record: from the typed records (``generator.records``,
    ``schema_version(kind)`` or ``SCHEMA_VERSIONS[kind]``) where they declare one, else
    ``default``."""
    try:
        records = importlib.import_module("generator.records")
    except ModuleNotFoundError as exc:
        if exc.name != "generator.records":
            raise
        return default
    lookup = getattr(records, "schema_version", None)
    if callable(lookup):
        try:
            found = lookup(kind)
        except (KeyError, LookupError, ValueError):
            found = None
        if found is not None:
            return str(found)
    table = getattr(records, "SCHEMA_VERSIONS", None)
    if isinstance(table, Mapping) and kind in table:
        return str(table[kind])
    return default


# --- model identity --------------------------------------------------------------------------

#: ModelSpec fields that change what a model computes or what its records say (the pixels it
#: sees, the layers methods use by default, the class names in records). Descriptive fields
#: (description, licence) are left out: editing them recomputes nothing but the model card.
SPEC_FIELDS = ("input_size", "mean", "std", "resize", "interpolation", "layers", "cam_layer", "embedding_layer",
               "class_names")


@dataclass(frozen=True)
class ModelIdentity:
    """What makes a model's outputs what they are: its id (records name it), its weights, its
    code (``ModelSpec.code_digest``: source files, scripted code, or library + version) and the
    spec fields that shape its inputs and defaults (:data:`SPEC_FIELDS`)."""

    id: str
    weights: str
    code: str
    spec: str = ""

    @classmethod
    def of(cls, spec: Any) -> "ModelIdentity":
        """From a :class:`~generator.models.spec.ModelSpec` (or anything with its fields)."""
        fields = {name: getattr(spec, name, None) for name in SPEC_FIELDS}
        return cls(id=str(spec.id), weights=str(spec.weights_digest),
                   code=str(getattr(spec, "code_digest", "") or ""),
                   spec=artifact_key("spec", KEY_FORMAT, **normalise(fields)))

    def as_dict(self) -> Dict[str, str]:
        return {"id": self.id, "weights": self.weights, "code": self.code, "spec": self.spec}


# --- effective parameters of attribution methods ---------------------------------------------

def effective_method_params(method: str, params: Mapping[str, Any]) -> Dict[str, Any]:
    """The parameters attribution ``method`` actually runs with: its catalogue defaults
    overridden by ``params`` (what the config says, plus run-level values such as
    ``precision``), validated and normalised. The one place keys learn a method's defaults."""
    from generator import catalogue

    return catalogue.effective_params(method, params)


def method_version(method: str) -> str:
    """The catalogue ``version`` of attribution ``method`` (bumped by hand when its numbers change)."""
    from generator import catalogue

    return str(catalogue.get(method).version)


# --- keys ------------------------------------------------------------------------------------

def effective_key(kind: str, *, family: str, version: str = "1", method: str = "", method_version: str = "",
                  params: Optional[Mapping[str, Any]] = None, model: Optional[ModelIdentity] = None,
                  inputs: Optional[Mapping[str, Any]] = None, **settings: Any) -> str:
    """The key of an artifact of ``kind``.

    ``family``: whose code fingerprint enters the key. ``version``: the producer's own version
    of the kind (the record's schema version is looked up, :func:`schema_version`). ``method`` and
    ``method_version``: the method that computed it, where a kind has several. ``params``: the
    *effective* parameters. ``model``: the identity of the model it ran. ``inputs``: digests of
    data and keys of the artifacts it reads. ``settings``: any other value that determines the
    result (seed, device type, number of images ...).
    """
    return artifact_key(
        kind, version, schema=schema_version(kind), key_format=KEY_FORMAT, family=family,
        code=code_fingerprint(family),
        method=method, method_version=method_version, params=normalise(params or {}),
        model=model.as_dict() if model is not None else None, inputs=normalise(inputs or {}),
        settings=normalise(settings))


def input_digest(what: str, **parts: Any) -> str:
    """A digest of a derived input that is not an artifact (e.g. which rows form a data split)."""
    return artifact_key(what, KEY_FORMAT, parts=normalise(parts))
