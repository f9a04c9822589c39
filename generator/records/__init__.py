"""Typed, versioned records: the one contract between the run and the render (torch-free).

Every artifact kind has a record class (a strict pydantic model) whose fields are exactly the
JSON object its stage writes as ``record.json``, with the kind's schema version. The run checks
each record with :func:`validate_record` before storing it; the renderer and ``modelcard diff``
read records through :func:`parse_record` (via ``generator.render.manifest.Manifest``), so a
renamed or missing field stops them with a line naming the artifact and the field, never later
inside a template.

A kind's ``SCHEMA`` is the version of its record layout: change the layout, bump it (and the
key of the kind changes with it, so old artifacts are recomputed rather than misread).

=========================  ===================================  =================================
kind                       record class                         written by
=========================  ===================================  =================================
dataset                    :class:`DatasetRecord`               pipeline.run
model                      :class:`ModelRecord`                 pipeline.run
training                   :class:`TrainingRecord`              models.fashion_training
predictions                :class:`PredictionsRecord`           stages.predictions
attribution                :class:`AttributionRecord`           stages.outcome
cam_segmentation           :class:`CamSegmentationRecord`       stages.segmentation
evaluation_selectivity     :class:`SelectivityRecord`           stages.evaluation
evaluation_sensitivity     :class:`SensitivityRecord`           stages.evaluation
evaluation_sanity          :class:`SanityRecord`                stages.evaluation
evaluation_roar            :class:`RoarRecord`                  stages.evaluation_roar
data_prototypes            :class:`PrototypesRecord`            stages.data_prototypes
data_influence             :class:`InfluenceRecord`             stages.data_influence
data_surrogate             :class:`SurrogateRecord`             stages.data_surrogate
features_*                 :class:`GalleryRecord` and others    stages.features_compute
blocks, blocks-icons       :class:`BlocksRecord`, ...           stages.blocks
compare                    :class:`CompareRecord`               stages.compare
representation_similarity  :class:`SimilarityRecord`            stages.compare_similarity
representation_grams       :class:`GramsRecord`                 stages.compare_similarity
concepts_tcav, _rcv, ...   :class:`TcavRecord` and others       stages.concepts
=========================  ===================================  =================================
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Dict, Mapping, Type

from pydantic import ValidationError

from generator.records.base import RECORD_TYPES, Number, Part, Record, RecordError, format_problems
from generator.records.blocks import BlocksIconsRecord, BlocksRecord
from generator.records.compare import (
    ClassRelation,
    ComparedModel,
    CompareRecord,
    ImageAgreement,
    MethodAgreement,
    ModelOnImage,
    PairAgreement,
)
from generator.records.concepts import DissectionRecord, RcvRecord, TcavRecord
from generator.records.data import (
    DataSplitInfo,
    InfluenceRecord,
    InfluenceScores,
    InfluenceTest,
    InfluenceTrainRow,
    MisclassifiedRates,
    PrototypeEntry,
    PrototypeGroup,
    PrototypesRecord,
    SurrogateFeature,
    SurrogateRecord,
    SurrogateRule,
    SurrogateRuleList,
    SurrogateTree,
)
from generator.records.evaluation import (
    RoarBudget,
    RoarRecord,
    SanityRecord,
    SanityScores,
    SelectivityRecord,
    SensitivityRecord,
    SensitivityScores,
)
from generator.records.features import (
    ClassesRecord,
    DeconvRecord,
    DeepDreamRecord,
    DiversityRecord,
    ExamplesRecord,
    FiltersRecord,
    GalleryRecord,
    NegativeRecord,
)
from generator.records.inputs import (
    DatasetItem,
    DatasetRecord,
    ModelRecord,
    ModelSpecInfo,
    SkippedFile,
    TrainingData,
    TrainingEpoch,
    TrainingRecord,
)
from generator.records.manifest import (
    MANIFEST_SCHEMA_VERSION,
    Failure,
    ManifestEntry,
    ManifestOutdated,
    ManifestRecord,
    parse_manifest,
)
from generator.records.outcome import (
    AttributionRecord,
    CamSegmentationRecord,
    PredictionRow,
    PredictionsRecord,
    TopClass,
)
from generator.records.similarity import GramsRecord, SimilarityParams, SimilarityRecord

#: kind -> version of its record layout.
SCHEMA_VERSIONS: Dict[str, str] = {kind: cls.SCHEMA for kind, cls in sorted(RECORD_TYPES.items())}

__all__ = [
    "MANIFEST_SCHEMA_VERSION", "RECORD_TYPES", "SCHEMA_VERSIONS", "ManifestOutdated", "Number", "Part", "Record",
    "RecordError", "check_manifest", "parse_manifest", "parse_record", "record_type", "validate_record",
    # records and their parts
    "AttributionRecord", "BlocksIconsRecord", "BlocksRecord", "CamSegmentationRecord", "ClassesRecord",
    "DataSplitInfo", "DatasetItem", "DatasetRecord", "DeconvRecord", "DeepDreamRecord", "DiversityRecord",
    "ExamplesRecord", "Failure", "FiltersRecord", "GalleryRecord", "InfluenceRecord", "InfluenceScores",
    "InfluenceTest", "InfluenceTrainRow", "ManifestEntry", "ManifestRecord", "MisclassifiedRates", "ModelRecord",
    "ModelSpecInfo", "NegativeRecord", "PredictionRow", "PredictionsRecord", "PrototypeEntry", "PrototypeGroup",
    "PrototypesRecord", "RoarBudget", "RoarRecord", "SanityRecord", "SanityScores", "SelectivityRecord",
    "SensitivityRecord", "SensitivityScores", "SkippedFile", "SurrogateFeature", "SurrogateRecord", "SurrogateRule",
    "SurrogateRuleList", "SurrogateTree", "TopClass", "TrainingData", "TrainingEpoch", "TrainingRecord",
    "ClassRelation", "ComparedModel", "CompareRecord", "ImageAgreement", "MethodAgreement", "ModelOnImage",
    "PairAgreement", "GramsRecord", "SimilarityParams", "SimilarityRecord",
    "DissectionRecord", "RcvRecord", "TcavRecord",
]


def record_type(kind: str) -> Type[Record]:
    """The record class of artifact kind ``kind``; an unknown kind names the close matches."""
    try:
        return RECORD_TYPES[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, list(RECORD_TYPES), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else f" (known: {sorted(RECORD_TYPES)})"
        raise RecordError(f"unknown artifact kind {kind!r}{hint}", kind=kind) from None


def _as_json(record: Mapping[str, Any]) -> Any:
    """The record exactly as the store will write it: tuples as lists, numpy scalars as numbers."""
    from generator.artifacts.store import json_bytes  # numpy + stdlib only

    return json.loads(json_bytes(record))


def parse_record(kind: str, record: Mapping[str, Any], where: str = "", hint: str = "") -> Record:
    """``record`` (a ``record.json`` object, or a record a stage built) as its typed record.

    ``where`` names the record in errors (default ``"<kind> record"``) and ``hint`` ends the
    message (what to do about it); raises :class:`RecordError` with one line per problem, each
    naming the field.
    """
    cls = record_type(kind)
    where = where or f"{kind} record"
    if isinstance(record, Mapping) and record.get("kind") not in (None, kind):
        end = f". {hint}" if hint else ""
        raise RecordError(f"{where}: field 'kind': is {record.get('kind')!r}, read as {kind!r}{end}",
                          kind=kind, field="kind")
    try:
        return cls.model_validate(dict(record) if isinstance(record, Mapping) else record)
    except ValidationError as exc:
        raise format_problems(where, exc, kind=kind, hint=hint) from None


def validate_record(kind: str, record: Mapping[str, Any]) -> None:
    """Check a record a stage built, before it is stored; raises :class:`RecordError` naming the
    kind and the field. The record is checked in its stored (JSON) form."""
    parse_record(kind, _as_json(record))


def check_manifest(data: Any, where: str = "manifest.json") -> ManifestRecord:
    """``manifest.json`` as a :class:`ManifestRecord`; refuses another schema (see :func:`parse_manifest`)."""
    return parse_manifest(data, where, SCHEMA_VERSIONS)
