"""The manifest: what one run produced, and the schema it was written with.

``manifest.json`` lists every artifact of the run with the labels pages look it up by. Its
``version`` is :data:`MANIFEST_SCHEMA_VERSION`; a manifest of another version was written by a
different modelcard, whose artifacts this one could misread, so the renderer refuses it and
asks for ``modelcard run``, which recomputes whatever changed (every artifact key includes its
kind's schema version). ``schemas`` (kind -> record schema version) lets a run say which
record layouts it wrote; it is checked against :data:`SCHEMA_VERSIONS` when present.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from pydantic import ConfigDict, Field, ValidationError

from generator.records.base import Part, RecordError, format_problems

#: Bump when the manifest's own layout changes, or when record layouts change in a way keys
#: alone would not catch. Runs write it as ``version``. 2: artifacts record the size and
#: sha256 of their files and the manifest lists the record schemas (reports written before
#: are refused with a clear line instead of failing artifact by artifact).
MANIFEST_SCHEMA_VERSION = 2

RERUN = "run `modelcard run` again to recompute it with this version"


class ManifestOutdated(RecordError):
    """A manifest from an older (or unknown) schema: never read, always recomputed."""


class ManifestEntry(Part):
    """One artifact of the run: where it is and the labels it is found by (model, dataset,
    method, layer, image; whatever the stage recorded)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    key: str
    path: str

    @property
    def labels(self) -> Dict[str, Any]:
        """Every label beyond kind, key and path, in the manifest's order."""
        return dict(self.model_extra or {})


class Failure(Part):
    what: str
    why: str


class ManifestRecord(Part):
    """``manifest.json``."""

    version: Optional[int] = None  # absent only in manifests written by hand (tests)
    schemas: Optional[Dict[str, str]] = None  # kind -> record schema version the run wrote
    title: Optional[str] = None
    device: Optional[str] = None
    models: List[str] = Field(default_factory=list)
    datasets: List[str] = Field(default_factory=list)
    pairs: List[List[str]] = Field(default_factory=list)
    artifacts: List[ManifestEntry] = Field(default_factory=list)
    failures: List[Failure] = Field(default_factory=list)
    unsupported: List[Failure] = Field(default_factory=list)  # methods not defined for a model, with why


def parse_manifest(data: Any, where: str = "manifest.json",
                   schema_versions: Optional[Mapping[str, str]] = None) -> ManifestRecord:
    """``data`` as a :class:`ManifestRecord`, refusing one of another schema.

    Raises :class:`ManifestOutdated` (one line, saying to run ``modelcard run`` again) for a
    manifest of another ``version`` or whose ``schemas`` differ from ``schema_versions``, and
    :class:`RecordError` naming the field for one that does not fit the layout.
    """
    if not isinstance(data, dict):
        raise ManifestOutdated(f"{where} does not hold a JSON object; {RERUN}")
    version = data.get("version")
    # Every manifest modelcard has written carries a version; one without is hand-made (tests)
    # and still has each record checked when it is read.
    if version is not None and version != MANIFEST_SCHEMA_VERSION:
        age = "an older" if isinstance(version, int) and version < MANIFEST_SCHEMA_VERSION else "an unknown"
        raise ManifestOutdated(f"{where} was written with {age} schema (version {version!r}; this modelcard reads "
                               f"version {MANIFEST_SCHEMA_VERSION}): {RERUN}", kind="manifest", field="version")
    try:
        manifest = ManifestRecord.model_validate(data)
    except ValidationError as exc:
        raise format_problems(where, exc, kind="manifest",
                              hint=f"It does not fit this version's layout: {RERUN}.") from None
    if manifest.schemas is not None and schema_versions is not None:
        changed = sorted(k for k, v in manifest.schemas.items() if schema_versions.get(k, v) != v)
        if changed:
            raise ManifestOutdated(
                f"{where} lists artifacts of an older record schema ({', '.join(changed)}): {RERUN}",
                kind="manifest", field="schemas")
    return manifest
