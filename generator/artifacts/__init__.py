"""Content-addressed artifacts: one record and its files per unit of work."""

from generator.artifacts.store import Artifact, ArtifactStore, artifact_key  # noqa: F401
