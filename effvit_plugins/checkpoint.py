"""Reading weight files safely.

Pretrained weight files (official releases, converted files, ImageNet checkpoints) are always read with
``torch.load(weights_only=True)``. Training frameworks' own resume checkpoints (OpenMMLab runner, Detectron2 /
fvcore) also hold a few Python objects besides tensors; :func:`load_allowlisted` reads them with
``weights_only=True`` extended by an explicit allow-list of globals (never ``weights_only=False``). The
framework-specific lists live in :mod:`effvit_plugins.mm.compat` and :mod:`effvit_plugins.detectron2.checkpoint`.

Where weights come from (:func:`resolve_checkpoint`, used by :func:`load_weights_file` and therefore by every loader
of this package): a local path, an ``http://`` / ``https://`` URL, or one of mmengine's model-zoo names
(``open-mmlab://NAME``, ``torchvision://NAME`` and their aliases ``openmmlab://``, ``modelzoo://``), which map to
URLs through mmengine's own tables. URLs are downloaded once into the torch hub cache
(``torch.hub.get_dir()/checkpoints/<file name>``, as ``torch.hub.load_state_dict_from_url``) and checked against
the SHA-256 prefix in the file name where it has one (torch's convention, ``name-<hex>.ext`` with at least 8 hex
digits).
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import re
import urllib.error
import uuid
import zipfile
from urllib.parse import urlparse
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Sequence

import torch

WRAPPER_KEYS = ("state_dict", "model", "model_ema", "module", "net")
URL_PREFIXES = ("http://", "https://")
# mmengine's model-zoo names (mmengine.runner.checkpoint.CheckpointLoader's schemes of the same prefixes):
# prefix -> the table it is looked up in
ZOO_PREFIXES = {"open-mmlab://": "openmmlab", "openmmlab://": "openmmlab", "torchvision://": "torchvision",
                "modelzoo://": "torchvision"}
REMOTE_PREFIXES = URL_PREFIXES + tuple(ZOO_PREFIXES)
# torch.hub's file-name convention for a SHA-256 prefix (torch.hub.HASH_REGEX), with at least 8 hex digits
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A weight file could not be read or does not fit the model."""


class ForeignCheckpointError(CheckpointError):
    """The weights are those of another architecture (a model-zoo name of mmengine, or a file none of whose keys
    fits the model and which is no family's official layout)."""


def is_zoo_name(location: str) -> bool:
    """True for mmengine's model-zoo names (``open-mmlab://NAME``, ``torchvision://NAME``, aliases)."""
    return isinstance(location, str) and location.startswith(tuple(ZOO_PREFIXES))


def zoo_url(location: str) -> str:
    """The URL that mmengine maps a model-zoo name (``open-mmlab://NAME``, ``torchvision://NAME``) to, read from
    mmengine's own tables (``mmengine/hub/*.json``, the user's ``$MMENGINE_HOME/open_mmlab.json``, torchvision's
    weight enums). A name that mmengine maps to a file under ``$MMENGINE_HOME`` gives that path.

    Raises:
        CheckpointError: mmengine (or, for ``torchvision://``, torchvision) is not installed, or the name is unknown
            (the message lists the closest known names).
    """
    prefix = next(p for p in ZOO_PREFIXES if location.startswith(p))
    name = location[len(prefix):]
    try:
        from mmengine.runner import checkpoint as mm_ckpt
    except ImportError:
        raise CheckpointError(
            f"{location!r}: {prefix} names are mmengine's model-zoo names and need mmengine to be resolved "
            f"(pip install mmengine), or give the file's URL or local path instead.") from None
    if ZOO_PREFIXES[prefix] == "torchvision":
        try:
            urls = mm_ckpt.get_torchvision_models()
        except ImportError:
            raise CheckpointError(f"{location!r}: {prefix} names need torchvision (pip install torchvision), or "
                                  "give the file's URL or local path instead.") from None
    else:
        urls = mm_ckpt.get_external_models()
        name = mm_ckpt.get_deprecated_model_names().get(name, name)
    if name not in urls:
        import difflib

        close = difflib.get_close_matches(name, list(urls), n=5, cutoff=0.5)
        raise CheckpointError(
            f"Unknown model-zoo name {location!r}: mmengine's table of {prefix} names has no {name!r}"
            + (f" (closest: {', '.join(prefix + c for c in close)})" if close else "")
            + ". Check the name, or give the file's URL or local path instead.")
    url = urls[name]
    if url.startswith(URL_PREFIXES):
        return url
    return os.path.join(mm_ckpt._get_mmengine_home(), url)


def hash_prefix(file_name: str) -> Optional[str]:
    """The SHA-256 prefix that a file name carries (``resnet50-0676ba61.pth`` -> ``'0676ba61'``), or None."""
    m = HASH_IN_NAME.search(os.path.basename(file_name))
    return m.group(1) if m else None


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hub_cache_path(url: str) -> str:
    """Where :func:`download` keeps ``url``: ``torch.hub.get_dir()/checkpoints/<file name>``."""
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(f"{url!r} names no file (its path ends with '/'): give the URL of the weight file.")
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def download(url: str, progress: bool = True) -> str:
    """The local copy of ``url`` in the torch hub cache (:func:`hub_cache_path`), downloaded if it is not there.

    The download goes to a temporary name (with a progress bar, ``torch.hub.download_url_to_file``) and is renamed
    to the cache name only after its SHA-256 matched the prefix in the file name (when the name has one), so the
    cache never holds a partial or unverified download, and processes downloading at the same time each end with
    the same complete file. A cached file whose name carries a hash is verified again on every use (hashing costs
    a fraction of reading the file; it catches files that other tools put into the same cache without a check,
    e.g. ``torch.hub.load_state_dict_from_url``'s default ``check_hash=False``): a mismatch deletes it and
    downloads it again.

    Raises:
        CheckpointError: the server answered with an error, could not be reached, or the download's hash does not
            match (the file is deleted; the message names the expected and the actual hash).
    """
    dst = hub_cache_path(url)
    expected = hash_prefix(dst)
    if os.path.isfile(dst):
        if expected is None:
            return dst
        actual = sha256_of(dst)
        if actual.startswith(expected):
            return dst
        logger.warning(f"{dst}: SHA-256 {actual} does not start with {expected} (the hash in its name); deleted, "
                       f"downloading {url} again.")
        os.remove(dst)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.{uuid.uuid4().hex}.unverified"
    logger.info(f"Downloading {url} to {dst}")
    try:
        torch.hub.download_url_to_file(url, tmp, None, progress=progress)
        if expected is not None:
            actual = sha256_of(tmp)
            if not actual.startswith(expected):
                raise CheckpointError(
                    f"The download of {url} is not the file its name promises: SHA-256 {actual}, expected a hash "
                    f"starting with {expected} (the hash in the file name). It was deleted; nothing was loaded. The "
                    "file on the server may have been replaced or the transfer corrupted: try again, or check the "
                    "URL.")
        os.replace(tmp, dst)
    except urllib.error.HTTPError as e:
        raise CheckpointError(f"Could not download {url}: the server answered HTTP {e.code} ({e.reason}). Check the "
                              "URL (open it in a browser), or download the file yourself and give its local path."
                              ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(f"Could not download {url}: {reason}. Check the network connection (and proxy "
                              f"settings), or download the file yourself and give its local path (or put it at "
                              f"{dst}).") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst


def resolve_checkpoint(location: str, progress: bool = True) -> str:
    """The local file of a weight location: a local path (``~`` expanded; not checked here), an ``http(s)://`` URL
    (:func:`download`), or an mmengine model-zoo name (``open-mmlab://NAME``, ``torchvision://NAME``:
    :func:`zoo_url`, then downloaded)."""
    location = os.fspath(location)
    if is_zoo_name(location):
        location = zoo_url(location)
    if location.startswith(URL_PREFIXES):
        return download(location, progress=progress)
    return os.path.expanduser(location)


def load_weights_file(path: str, map_location="cpu") -> dict:
    """``torch.load`` a weight file with ``weights_only=True`` and a clear error for missing/corrupt files. ``path``
    is anything :func:`resolve_checkpoint` takes (a local path, a URL, an mmengine model-zoo name)."""
    local = resolve_checkpoint(path)
    if not os.path.isfile(local):
        raise CheckpointError(f"Checkpoint file not found: {path!r}. Check the path (or download the official weights).")
    try:
        obj = torch.load(local, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path!r} holds Python objects besides tensors, so it is not loaded as pretrained weights "
            f"(weights_only=True). Re-save only its state_dict: torch.save(ckpt['state_dict'], 'weights.pth'). "
            f"Detail: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"Could not read checkpoint {path!r}: the file looks truncated or corrupt ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}). Download it again; nothing was loaded."
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path!r} does not contain a dict of tensors (found {type(obj).__name__}).")
    return dict(obj)


def unwrap_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """Return the tensor dict inside ``{'state_dict': ...}``, ``{'model': ...}`` (or bare), without ``module.``."""
    sd = obj
    for _ in range(3):
        inner = next((sd[k] for k in WRAPPER_KEYS if k in sd and isinstance(sd[k], Mapping)), None)
        if inner is None or any(torch.is_tensor(v) for v in sd.values()) and not inner:
            break
        sd = inner
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        out[k[len("module."):] if k.startswith("module.") else k] = v
    if not out:
        raise CheckpointError(f"No tensors found in the checkpoint (top-level keys: {list(obj)[:10]}).")
    return out


# Globals that numpy arrays / scalars and standard containers pickle with: safe to rebuild (no code runs).
NUMPY_GLOBALS = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
})
NUMPY_PREFIXES = ("numpy.dtypes.",)
CONTAINER_GLOBALS = frozenset({"collections.OrderedDict", "collections.defaultdict", "builtins.set",
                               "builtins.frozenset"})


def _resolve_global(name: str):
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        if module.startswith("numpy.core"):  # numpy 2 renamed numpy.core -> numpy._core
            return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), attr)
        raise


def load_allowlisted(filename: str, allowed: Collection[str], allowed_prefixes: Sequence[str] = (),
                     replacements: Optional[Mapping[str, Callable]] = None, map_location: Any = "cpu",
                     kind: str = "checkpoint", hint: str = "") -> Any:
    """``torch.load(filename, weights_only=True)`` that also accepts the globals named in ``allowed`` (full names
    such as ``"numpy.ndarray"``) or starting with one of ``allowed_prefixes``.

    The globals the file needs are listed first (``torch.serialization.get_unsafe_globals_in_checkpoint``); if any
    is outside the allow-list nothing is unpickled and a :class:`CheckpointError` names them (plus ``hint``).
    ``replacements`` maps a global name to the restricted callable that stands in for it while unpickling (e.g. a
    ``getattr`` that only resolves known attributes). ``kind`` names the file kind in messages.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    refused = [g for g in needed if g not in allowed and not g.startswith(tuple(allowed_prefixes))]
    if refused:
        raise CheckpointError(
            f"Refusing to unpickle {filename}: it needs globals outside the allow-list of {kind}s "
            f"({', '.join(refused)}).{' ' + hint if hint else ''}")
    replacements = replacements or {}
    safe = [(replacements[g], g) if g in replacements else _resolve_global(g) for g in needed]
    if any(g.startswith("numpy.") for g in needed):
        # dtype *instances* are rebuilt with their concrete class (numpy.dtypes.Float64DType, ...), which the
        # checkpoint does not list as a global
        import numpy.dtypes

        safe += [c for c in vars(numpy.dtypes).values() if isinstance(c, type)]
    with torch.serialization.safe_globals(safe):
        return torch.load(filename, map_location=map_location, weights_only=True)
