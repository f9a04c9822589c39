"""The store trusts no damaged artifact: sizes and sha256 are recorded, checked on every read,
and a damaged artifact is recomputed (pipeline) or named with a clear error (renderer).
Writes are fsynced, and temporary names left by killed writers are cleaned up."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest

from generator.artifacts import store as store_module
from generator.artifacts.store import (
    INTEGRITY_KEY,
    RECORD_NAME,
    ArtifactStore,
    CorruptArtifact,
    artifact_key,
    npz_bytes,
    write_json_atomic,
)

REPO = Path(__file__).resolve().parents[1]
MAPS = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)


def _counting_compute() -> Tuple[Callable[[], Any], List[int]]:
    """A compute function for ``get_or_compute`` and the list whose length counts its calls."""
    calls: List[int] = []

    def compute() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        calls.append(1)
        return ({"method": "saliency", "shape": (4, 8, 8)},
                {"maps": ("maps.npz", npz_bytes(maps=MAPS)), "notes": ("notes.txt", "reading guide")})

    return compute, calls


def _truncate(path: Path) -> None:
    path.write_bytes(b"")  # what a power cut before the data reached the disk leaves


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {"truncated to 0 bytes": _truncate, "one byte flipped": _flip_byte, "deleted": Path.unlink}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_file_is_not_reused_but_recomputed(tmp_path: Path, damage: str, caplog):
    store = ArtifactStore(tmp_path)
    key = artifact_key("attribution", "1", method="saliency")
    compute, calls = _counting_compute()
    art, computed = store.get_or_compute("attribution", key, compute)
    assert computed and len(calls) == 1

    DAMAGE[damage](art.file("maps"))
    with caplog.at_level(logging.WARNING, logger=store_module.__name__):
        assert store.get("attribution", key) is None
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert str(art.path) in warning and "maps.npz" in warning

    again, computed = store.get_or_compute("attribution", key, compute)
    assert computed and len(calls) == 2
    np.testing.assert_array_equal(again.load_npz("maps")["maps"], MAPS)
    # Once overwritten, the artifact verifies again and is reused.
    _, computed = store.get_or_compute("attribution", key, compute)
    assert not computed and len(calls) == 2


def test_truncated_record_is_recomputed(tmp_path: Path, caplog):
    store = ArtifactStore(tmp_path)
    key = artifact_key("attribution", "1", method="saliency")
    compute, calls = _counting_compute()
    art, _ = store.get_or_compute("attribution", key, compute)
    _truncate(art.path / RECORD_NAME)
    with caplog.at_level(logging.WARNING, logger=store_module.__name__):
        _, computed = store.get_or_compute("attribution", key, compute)
    assert computed and len(calls) == 2
    assert RECORD_NAME in caplog.text


def test_record_lists_size_and_sha256_per_role_and_stays_deterministic(tmp_path: Path):
    records = []
    for name in ("a", "b"):
        store = ArtifactStore(tmp_path / name)
        key = artifact_key("attribution", "1", method="saliency")
        art, _ = store.get_or_compute("attribution", key, _counting_compute()[0])
        records.append((art.path / RECORD_NAME).read_bytes())
    assert records[0] == records[1]
    record = json.loads(records[0])
    # The role -> file name map every reader uses is unchanged; the checks sit beside it.
    assert record["files"] == {"maps": "maps.npz", "notes": "notes.txt"}
    maps = art.file("maps").read_bytes()
    assert record[INTEGRITY_KEY]["maps"] == {"sha256": hashlib.sha256(maps).hexdigest(), "size": len(maps)}
    assert record[INTEGRITY_KEY]["notes"]["size"] == len("reading guide")
    assert art.record == record  # put returns the record exactly as readers will see it


def test_record_from_before_digests_is_recomputed_once(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    key = artifact_key("attribution", "1", method="saliency")
    compute, calls = _counting_compute()
    art, _ = store.get_or_compute("attribution", key, compute)
    record = json.loads((art.path / RECORD_NAME).read_text())
    del record[INTEGRITY_KEY]
    (art.path / RECORD_NAME).write_text(json.dumps(record, indent=1, sort_keys=True))
    assert store.get("attribution", key) is None
    store.get_or_compute("attribution", key, compute)
    store.get_or_compute("attribution", key, compute)
    assert len(calls) == 2


def _report(root: Path) -> Tuple[Path, Path]:
    """A work folder with one stored attribution artifact listed in manifest.json; returns the
    work folder and the artifact folder."""
    store = ArtifactStore(root / "artifacts")
    art, _ = store.get_or_compute("attribution", artifact_key("attribution", "1", v=1), _counting_compute()[0])
    entry = {"kind": "attribution", "key": art.key, "path": str(art.path.relative_to(store.root)),
             "model": "m", "dataset": "d", "method": "saliency"}
    write_json_atomic(root / "manifest.json", {"models": ["m"], "datasets": ["d"], "artifacts": [entry]})
    return root, art.path


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_renderer_names_the_damaged_file_and_says_to_run_again(tmp_path: Path, damage: str):
    from generator.render.manifest import Manifest

    work, folder = _report(tmp_path)
    manifest = Manifest.load(work)
    art = manifest.one("attribution", model="m", method="saliency")
    np.testing.assert_array_equal(art.load_npz("maps")["maps"], MAPS)

    DAMAGE[damage](folder / "maps.npz")
    with pytest.raises(CorruptArtifact) as caught:
        Manifest.load(work).one("attribution", model="m", method="saliency")
    message = str(caught.value)
    assert str(folder) in message and "maps.npz" in message and "`modelcard run`" in message


def test_renderer_rejects_a_record_without_digests(tmp_path: Path):
    from generator.render.manifest import Manifest

    work, folder = _report(tmp_path)
    record = json.loads((folder / RECORD_NAME).read_text())
    del record[INTEGRITY_KEY]
    (folder / RECORD_NAME).write_text(json.dumps(record))
    with pytest.raises(CorruptArtifact, match="older version.*modelcard run"):
        Manifest.load(work).find("attribution")


def test_every_file_record_and_folder_is_fsynced_before_and_after_the_rename(tmp_path: Path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file an fsync went to")
    events: List[Tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = ArtifactStore(tmp_path)
    key = artifact_key("k", "1")
    written = lambda path: path.write_bytes(b"from a writer")  # noqa: E731
    store.put("k", key, {}, {"a": ("a.bin", b"bytes"), "b": ("b.txt", "text"), "c": ("c.bin", written)})
    rename = events.index(("replace", str(tmp_path / "k" / key)))
    before = {Path(p).name for kind, p in events[:rename] if kind == "fsync"}
    assert {"a.bin", "b.txt", "c.bin", RECORD_NAME} <= before
    assert ("fsync", str(tmp_path / "k")) in events[rename:]  # the parent, after the rename

    events.clear()
    write_json_atomic(tmp_path / "manifest.json", {"a": 1})
    rename = events.index(("replace", str(tmp_path / "manifest.json")))
    assert events[rename - 1][0] == "fsync" and ".manifest.json." in events[rename - 1][1]
    assert events[rename + 1:] == [("fsync", str(tmp_path))]


def test_write_json_atomic_leaves_no_temporary_file_when_it_fails(tmp_path: Path, monkeypatch):
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"version": object()})  # cannot be serialised
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]

    def full_disk(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        write_json_atomic(target, {"version": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    assert json.loads(target.read_text()) == {"version": 1}


KILLED_WRITER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from generator.artifacts.store import ArtifactStore

    def slow(path: Path) -> None:
        path.write_bytes(b"half")
        print("writing", flush=True)
        time.sleep(60)

    ArtifactStore(sys.argv[1]).put("k", sys.argv[2], {}, {"data": ("data.bin", slow)})
''')


def test_temporary_folder_of_a_killed_writer_is_removed_when_the_store_opens(tmp_path: Path):
    key = artifact_key("k", "1")
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), key], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()  # SIGKILL: no except/finally in the child runs
        child.wait()
        child.stdout.close()
    leftovers = [p for p in (tmp_path / "k").iterdir() if p.name.startswith(f".{key}.")]
    assert len(leftovers) == 1 and (leftovers[0] / "data.bin").read_bytes() == b"half"

    kind = tmp_path / "k"
    mine = kind / (store_module._temp_prefix(key) + "live")  # a writer still running: this process
    mine.mkdir()
    fresh_legacy, old_legacy = kind / f".{key}.abcd1234", kind / f".{key[::-1]}.efgh5678"
    fresh_legacy.mkdir()
    old_legacy.mkdir()
    hour_ago = time.time() - 2 * store_module.STALE_AFTER_SECONDS
    os.utime(old_legacy, (hour_ago, hour_ago))
    (kind / ".notes").write_text("a user's file")  # not a temporary name: never touched

    store = ArtifactStore(tmp_path)
    assert not leftovers[0].exists() and not old_legacy.exists()
    assert mine.exists() and fresh_legacy.exists() and (kind / ".notes").exists()
    assert store.get("k", key) is None


def test_store_and_manifest_reader_import_no_torch():
    code = ("import sys, generator.artifacts.store, generator.render.manifest; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
