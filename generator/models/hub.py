"""Published weights in local caches: the Hugging Face Hub cache and the torch hub cache.

Two rules shape this module:

* A file already in the cache is used as it is. The network is not asked whether a newer
  revision exists, so a report is rebuilt from the same weights and a machine without a network
  never waits on a timeout for a model it already has. (Delete the cached folder to refresh.)
* A missing file is fetched at most once. Before a Hub download a single short request checks
  that the Hub answers at all, because ``huggingface_hub`` retries an unreachable host for half
  a minute per file. Every failure is one line naming the model, the cache path looked in, why
  nothing was fetched, and the command that fills the cache on a machine with a network.

Offline mode: ``MODELCARD_OFFLINE=1`` (every download this tool makes) or ``HF_HUB_OFFLINE=1``
(huggingface_hub's own switch, honoured here for the torch hub cache too) means the network is
never tried; cached files still load.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch

OFFLINE_VARIABLES = ("MODELCARD_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}
# One request to the Hub's front page: long enough for a slow link, short enough that a machine
# without a route fails in seconds rather than after huggingface_hub's retries.
PROBE_TIMEOUT_S = 5.0
# torch hub file names end in the first hex digits of their sha256 (resnet18-f37072fd.pth).
_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")


class WeightsUnavailableError(RuntimeError):
    """Published weights are neither cached nor downloadable; the message says how to fix it."""


def offline_switch() -> Optional[str]:
    """The environment setting that forbids downloads (e.g. ``HF_HUB_OFFLINE=1``), or None.

    Read at call time, not at import, so a switch set by a test or a wrapper script counts.
    """
    for name in OFFLINE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.lower() in _TRUE:
            return f"{name}={value}"
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    # Set when huggingface_hub was imported: its HTTP session refuses every request from then on.
    return "HF_HUB_OFFLINE, set when huggingface_hub was imported" if constants.HF_HUB_OFFLINE else None


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, shortened: the reason inside a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# torch hub cache (torchvision weights, timm weights published only as a URL)

def torch_hub_checkpoint(url: str, model_id: str, what: str, fill_command: str) -> Path:
    """The cached file of ``url`` in ``torch.hub.get_dir()/checkpoints``, downloaded when missing.

    ``what`` names the weights in messages (``torchvision weights ResNet18_Weights.IMAGENET1K_V1``);
    ``fill_command`` is the shell command that fills the cache on a machine with a network.
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    cached = folder / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return cached
    offline = offline_switch()
    if offline:
        reason = f"downloads are off ({offline})"
    else:
        partial = cached.with_name(cached.name + ".partial")
        try:
            # A fresh install has no checkpoints folder yet; torch creates it only in its own loaders.
            folder.mkdir(parents=True, exist_ok=True)
            match = _HASH_PREFIX.search(cached.name)
            # The download goes to a side name and is renamed only when complete and verified,
            # so an interrupted download never looks like a cached file.
            torch.hub.download_url_to_file(url, str(partial), hash_prefix=match.group(1) if match else None,
                                           progress=False)
            os.replace(partial, cached)
            return cached
        except Exception as exc:
            partial.unlink(missing_ok=True)
            reason = f"the download from {url} failed ({one_line(exc)})"
    raise WeightsUnavailableError(
        f"model {model_id!r}: {what} not found at {cached} and {reason}; on a machine with a network run "
        f"{fill_command} and copy ~/.cache/torch/hub/checkpoints/{cached.name} to {folder}/")


# ---------------------------------------------------------------------------------------------
# Hugging Face Hub cache

@dataclass
class HubFile:
    """One file of a Hub repository, in the local cache."""

    repo_id: str
    filename: str
    commit: str  # the snapshot the file belongs to (the folder name under snapshots/)
    path: Path


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder (``HF_HUB_CACHE``, else ``HF_HOME/hub``, as the library reads them)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_repo_folder(repo_id: str) -> str:
    """The folder of a model repository inside the Hub cache (``models--org--name``)."""
    return "models--" + repo_id.replace("/", "--")


def split_revision(repo_spec: str) -> Tuple[str, Optional[str]]:
    """``org/name@rev`` -> (``org/name``, ``rev``); timm and the Hub write revisions this way."""
    repo_id, _, revision = repo_spec.partition("@")
    return repo_id, (revision or None)


def _cached(repo_id: str, filename: str, revision: Optional[str], cache: Path) -> Tuple[Optional[Path], bool]:
    """(cached path or None, whether the cache records that the file does not exist upstream)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision or "main")
    if isinstance(found, str):
        return Path(found), False
    return None, found is not None  # a non-str, non-None answer is the "known missing" marker


def _hub_unreachable() -> Optional[str]:
    """Why the Hub cannot be reached, or None when it answers (a 4xx other than 407 is an answer)."""
    from huggingface_hub import constants, get_session

    try:
        # get_session honours the user's proxy and certificate settings, as the download will.
        status = get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S).status_code
    except Exception as exc:
        return f"the Hub ({constants.ENDPOINT}) cannot be reached ({one_line(exc)})"
    # A proxy that answers for a Hub it cannot reach says so with 407 or 5xx; downloading through
    # it would only add huggingface_hub's retries.
    if status == 407 or status >= 500:
        return f"the Hub ({constants.ENDPOINT}) cannot be reached (HTTP {status})"
    return None


def hub_file(model_id: str, repo_spec: str, candidates: Sequence[str], what: str, fill_command: str) -> HubFile:
    """The first of ``candidates`` that repository ``repo_spec`` (``org/name[@rev]``) has, from the cache.

    Candidates are tried in order (``model.safetensors`` before ``pytorch_model.bin``); a missing
    one is downloaded unless offline. Raises WeightsUnavailableError with one line otherwise.
    """
    repo_id, revision = split_revision(repo_spec)
    cache = hub_cache_dir()
    known_missing = []
    for name in candidates:
        path, missing = _cached(repo_id, name, revision, cache)
        if path is not None:
            return HubFile(repo_id, name, path.parent.name, path)
        if missing:
            known_missing.append(name)
    files = " or ".join(candidates)
    looked = f"{cache / hub_repo_folder(repo_id)} ({files}{' at ' + revision if revision else ''})"
    offline = offline_switch()
    reason = f"downloads are off ({offline})" if offline else _hub_unreachable()
    if reason is None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

        for name in candidates:
            if name in known_missing:
                continue
            try:
                path = Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=str(cache)))
                return HubFile(repo_id, name, path.parent.name, path)
            except LocalEntryNotFoundError as exc:  # the connection dropped after the probe
                reason = f"the download failed ({one_line(exc)})"
                break
            except EntryNotFoundError:  # the repository has no such file: try the next name
                reason = f"the repository has none of {files}"
            except RepositoryNotFoundError as exc:  # includes gated repositories without a login
                reason = f"the Hub has no repository {repo_id} this machine may read ({one_line(exc)})"
                break
            except Exception as exc:
                reason = f"the download failed ({one_line(exc)})"
                break
        else:
            reason = reason or f"the cache records that the repository has none of {files}"
    raise WeightsUnavailableError(
        f"model {model_id!r}: {what} not found in the Hugging Face Hub cache {looked} and {reason}; "
        f"on a machine with a network run {fill_command} and copy {hub_repo_folder(repo_id)} from its "
        f"~/.cache/huggingface/hub to {cache}/ (or set HF_HUB_CACHE)")


def add_to_hub_cache(cache: Path, repo_id: str, files: Dict[str, Callable[[Path], None]],
                     commit: str = "0" * 40) -> str:
    """Lay out ``files`` (name -> writer) the way huggingface_hub stores a download of ``repo_id``
    (``models--org--name/{blobs,refs/main,snapshots/<commit>}``); returns the commit.

    For machines without a network: weights copied over by hand become loadable by name, and the
    tests and benchmarks exercise the real cache lookup without a download.
    """
    repo = Path(cache) / hub_repo_folder(repo_id)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, write in files.items():
        staged = repo / "blobs" / "incoming.tmp"
        write(staged)
        blob = repo / "blobs" / hashlib.sha256(staged.read_bytes()).hexdigest()
        staged.replace(blob)
        link = snapshot / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(blob, snapshot), link)
    return commit
