"""Models by name: the model index (``model-index.yml`` and the ``configs/<folder>/metafile.yml`` it imports), and
the upstream inferencers built from a name or a config.

Every model of the index is named after its config file (``mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco``)::

    from effvit_plugins import apis

    apis.list_models('*edgevit-xxs*', task='Semantic Segmentation')   # fnmatch pattern, sorted names
    apis.get_model_info('edgevit-xxs_8xb256_in1k')                    # the metafile entry (a dict)
    cfg = apis.get_config('fpn_edgevit-xxs_8xb4-40k_ade20k-512x512')  # an mmengine Config
    inferencer = apis.inferencer('mask-rcnn_edgevit-xxs_fpn_8xb2-1x_coco', weights=None, device='cpu')
    inferencer('demo.jpg', out_dir='out')                             # mmdet's DetInferencer

:func:`inferencer` returns mmdet's ``DetInferencer``, mmseg's ``MMSegInferencer`` or mmpretrain's
``ImageClassificationInferencer``, chosen by the config's library (its ``default_scope``; for a config without
one, the registry that holds ``model.type``). ``weights``: ``None`` builds a randomly initialised model (the
upstream inferencer warns so); ``'official'`` loads the ``Weights`` URL of the model's metafile entry (only models
with an official download have one); any other string is a checkpoint path or URL passed to the inferencer.

Image classifiers are also registered in mmpretrain's own ``ModelHub`` when ``effvit_plugins`` is imported with
mmpretrain installed (:func:`register_mmpretrain_models`), so ``mmpretrain.get_model(name)``,
``mmpretrain.list_models('*efficientvit*')`` and ``mmpretrain.inference_model`` work with our names;
``get_model(name, pretrained=True)`` loads the metafile's ``Weights`` URL.

Where the index is: :func:`model_zoo_root` (``<package>/.mim`` in an installed wheel, the repository root in a
source checkout). This module imports no framework at import time.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .resources import mim_path

#: Results tasks of the model index -> the OpenMMLab library whose inferencer runs the model.
TASK_LIBRARY = {
    "Image Classification": "mmpretrain",
    "Object Detection": "mmdet",
    "Instance Segmentation": "mmdet",
    "Semantic Segmentation": "mmseg",
}
#: library -> (module, inferencer class, name of its weights argument).
INFERENCERS = {
    "mmdet": ("mmdet.apis", "DetInferencer", "weights"),
    "mmseg": ("mmseg.apis", "MMSegInferencer", "weights"),
    "mmpretrain": ("mmpretrain.apis", "ImageClassificationInferencer", "pretrained"),
}
OFFICIAL = "official"
_MMPRETRAIN_REGISTERED: Dict[str, Path] = {}  # our names registered in mmpretrain's ModelHub -> their metafile


def model_zoo_root() -> Path:
    """The directory holding ``model-index.yml`` (the metafiles' ``Config`` paths are relative to it):
    ``effvit_plugins/.mim`` (:mod:`effvit_plugins.resources`: copies in a wheel or sdist, links in a checkout).

    Raises:
        FileNotFoundError: it has no ``model-index.yml``.
    """
    root = Path(mim_path())
    if not (root / "model-index.yml").is_file():
        raise FileNotFoundError(
            f"effvit_plugins' model index is missing: no {root / 'model-index.yml'}. Install effvit_plugins from its "
            f"wheel or sdist (they ship it), or use a git checkout (its effvit_plugins/.mim links are committed); a "
            f"config file path works without the index.")
    return root


def _yaml_load(path: Path):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=loader)


@functools.lru_cache(maxsize=None)
def _index(root: Path) -> Dict[str, dict]:
    """name -> metafile entry (a dict, as written) for every model of the index under ``root``; each entry also
    gets ``_metafile``: the path of its metafile."""
    models: Dict[str, dict] = {}
    for rel in (_yaml_load(root / "model-index.yml") or {}).get("Import", []):
        metafile = root / rel
        for entry in (_yaml_load(metafile) or {}).get("Models", []):
            name = entry["Name"]
            if name in models:
                raise ValueError(f"Model name {name!r} appears twice in the model index "
                                 f"({models[name]['_metafile']} and {metafile}).")
            models[name] = dict(entry, _metafile=str(metafile))
    return models


def _tasks(entry: dict) -> List[str]:
    return [r["Task"] for r in entry.get("Results") or []]


def list_models(pattern: Optional[str] = None, task: Optional[str] = None) -> List[str]:
    """Sorted names of the models of the index.

    Args:
        pattern: an ``fnmatch`` pattern (``'*edgevit*'``, ``'mask-rcnn_*_coco'``); as mmpretrain's
            ``list_models``, a pattern also matches names that continue after it (``'retinanet'`` lists every
            RetinaNet). ``None``: every model.
        task: keep the models whose ``Results`` include this task, one of :data:`TASK_LIBRARY`'s keys
            (``'Image Classification'``, ``'Object Detection'``, ``'Instance Segmentation'``,
            ``'Semantic Segmentation'``).
    """
    if task is not None and task not in TASK_LIBRARY:
        raise ValueError(f"Unknown task {task!r}; the tasks of the model index are {sorted(TASK_LIBRARY)}.")
    index = _index(model_zoo_root())
    names = list(index) if pattern is None else fnmatch.filter(index, pattern + "*")
    if task is not None:
        names = [n for n in names if task in _tasks(index[n])]
    return sorted(names)


class UnknownModelError(KeyError):
    """A name that is not in the model index (a ``KeyError`` whose message prints as written)."""

    def __str__(self):
        return str(self.args[0])


def _unknown_name(name: str, index: Dict[str, dict]) -> UnknownModelError:
    close = difflib.get_close_matches(name, list(index), n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return UnknownModelError(
        f"No model named {name!r} in effvit_plugins' model index ({model_zoo_root()}/model-index.yml).{hint} List "
        f"every name with `python -c \"from effvit_plugins.apis import list_models; print(*list_models(), "
        f"sep=chr(10))\"` (or list_models('*pattern*')), or give a config file path.")


def get_model_info(name: str) -> dict:
    """The metafile entry of model ``name`` (``Name``, ``In Collection``, ``Config``, ``Metadata``, ``Results``,
    and ``Weights`` / ``Converted From`` where the model has official weights), plus ``_metafile``: its file.

    Raises:
        UnknownModelError: (a ``KeyError``) unknown name; the message lists close matches and how to list every
            name.
    """
    index = _index(model_zoo_root())
    if name not in index:
        raise _unknown_name(name, index)
    return dict(index[name])


def config_path(name: str) -> Path:
    """The absolute path of the config file of model ``name``."""
    return model_zoo_root() / get_model_info(name)["Config"]


def get_config(name: str, cfg_options: Optional[dict] = None):
    """The mmengine ``Config`` of model ``name`` (loading it imports effvit_plugins, as its ``custom_imports``
    say), with ``cfg_options`` merged (``Config.merge_from_dict`` keys, e.g.
    ``{'test_dataloader.dataset.pipeline.1.scale': (320, 320)}``)."""
    return _load_config(str(config_path(name)), cfg_options)


def _load_config(path: str, cfg_options: Optional[dict]):
    from mmengine.config import Config

    import effvit_plugins  # noqa: F401  (registers our modules, as the configs' custom_imports do)

    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def resolve(name_or_config, cfg_options: Optional[dict] = None) -> Tuple[object, Optional[str]]:
    """``(Config, model name or None)`` for a model name, a config file path or an mmengine ``Config``.

    Raises:
        UnknownModelError: (a ``KeyError``) a string that is neither an existing file nor a model name.
        FileNotFoundError: a ``.py`` path that does not exist.
    """
    from mmengine.config import Config

    if isinstance(name_or_config, Config):
        cfg = name_or_config.copy()
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        return cfg, None
    text = os.fspath(name_or_config)
    if os.path.isfile(text):
        return _load_config(text, cfg_options), None
    if text.endswith(".py"):
        raise FileNotFoundError(f"Config file not found: {text!r}. Give an existing config file or a model name "
                                f"(effvit_plugins.apis.list_models()).")
    return get_config(text, cfg_options), text


def library_of(cfg) -> str:
    """The OpenMMLab library that builds and runs ``cfg``'s model (``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``):
    the config's ``default_scope``, or for a config without one, the library whose MODELS registry holds
    ``model.type``.

    Raises:
        ValueError: neither says one of the three.
    """
    scope = cfg.get("default_scope")
    if scope in INFERENCERS:
        return scope
    model_type = cfg.get("model", {}).get("type")
    for lib in INFERENCERS:
        if importlib.util.find_spec(lib) is None:
            continue
        if model_type in importlib.import_module(f"{lib}.registry").MODELS.module_dict:
            return lib
    raise ValueError(f"Cannot tell which library runs this config: default_scope={scope!r}, "
                     f"model.type={model_type!r}. Set default_scope to one of {sorted(INFERENCERS)}.")


def _official_weights(name: Optional[str]) -> str:
    if name is None:
        raise ValueError(f"weights={OFFICIAL!r} needs a model name (the weights URL is in its metafile entry); for a "
                         f"config file, give the checkpoint path or URL.")
    url = get_model_info(name).get("Weights")
    if not url:
        with_weights = [n for n in list_models() if _index(model_zoo_root())[n].get("Weights")]
        raise ValueError(f"Model {name!r} has no official weights in the model index (it trains from the configs "
                         f"only). Models with official weights: {', '.join(with_weights) or 'none'}.")
    return url


def inferencer(name_or_config, weights: Optional[str] = None, device: str = "cpu",
               cfg_options: Optional[dict] = None, **kwargs):
    """The upstream inferencer of a model: mmdet's ``DetInferencer``, mmseg's ``MMSegInferencer`` or mmpretrain's
    ``ImageClassificationInferencer`` (see :func:`library_of`).

    Args:
        name_or_config: a model name of the index, a config file path or an mmengine ``Config``.
        weights: ``None``: random initialisation (the upstream inferencer warns so). ``'official'``: the ``Weights``
            URL of the model's metafile entry (names only; an error for models without one). Else a checkpoint
            path or URL (anything mmengine's ``load_checkpoint`` reads).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        cfg_options: merged into the config first (``Config.merge_from_dict`` keys), e.g. a smaller test scale.
        **kwargs: passed to the inferencer (``palette=...``, ``classes=...``, ...).
    """
    cfg, name = resolve(name_or_config, cfg_options)
    if weights == OFFICIAL:
        weights = _official_weights(name)
    lib = library_of(cfg)
    module, cls_name, weights_arg = INFERENCERS[lib]
    if importlib.util.find_spec(lib) is None:
        raise ImportError(f"This model runs with {lib}, which is not installed (pip install -U openmim && "
                          f"mim install {lib}).")
    from mmengine.registry import init_default_scope

    cls = getattr(importlib.import_module(module), cls_name)
    # mmdet's and mmseg's inferencers set the default scope themselves, mmpretrain's builds its pipeline under the
    # current one: set it for every library, so that inferencers of several libraries live in one process.
    init_default_scope(lib)
    if lib == "mmpretrain":
        weights = weights or False  # mmpretrain's argument: False = no checkpoint
    classes = None if weights else _config_classes(cfg, lib)
    if lib == "mmseg" and classes is not None and not {"classes", "palette", "dataset_name"} & set(kwargs):
        kwargs.update(classes=classes["classes"], palette=classes.get("palette"))
    result = cls(model=cfg, device=device, **{weights_arg: weights}, **kwargs)
    if lib == "mmdet" and classes is not None:
        result.model.dataset_meta["classes"] = classes["classes"]  # also the visualizer's (the same dict)
    return result


def _config_classes(cfg, lib: str) -> Optional[dict]:
    """The ``METAINFO`` (classes, palette) of the config's test dataset class. Without a checkpoint, mmdet's and
    mmseg's inferencers would draw with COCO's / Cityscapes' class names whatever the config's dataset is (and
    fail on labels beyond them: LVIS, ADE20K); mmpretrain's already reads the config's dataset."""
    if lib == "mmpretrain":
        return None
    dataset_type = cfg.get("test_dataloader", {}).get("dataset", {}).get("type")
    dataset_cls = importlib.import_module(f"{lib}.registry").DATASETS.get(dataset_type) if dataset_type else None
    meta = getattr(dataset_cls, "METAINFO", None)
    return meta if meta and meta.get("classes") else None


def register_mmpretrain_models(missing_ok: bool = False) -> List[str]:
    """Register the image classifiers of the model index in mmpretrain's ``ModelHub`` (configs as absolute paths,
    ``weights`` = the metafile's ``Weights`` URL), so that mmpretrain's ``get_model`` / ``list_models`` /
    ``inference_model`` find them by name. Only models whose ``Results`` include ``Image Classification`` are
    registered. Run by ``import effvit_plugins`` when mmpretrain is installed; a second call does nothing.

    Args:
        missing_ok: without mmpretrain or without a model index (:func:`model_zoo_root`) register nothing instead
            of raising.

    Returns:
        the names registered by this call.
    """
    if importlib.util.find_spec("mmpretrain") is None:
        if missing_ok:
            return []
        raise ImportError("register_mmpretrain_models needs mmpretrain (mim install mmpretrain).")
    try:
        root = model_zoo_root()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    from mmpretrain.apis import ModelHub
    from modelindex.models.Model import Model

    added = []
    for name, entry in _index(root).items():
        if "Image Classification" not in _tasks(entry) or name in _MMPRETRAIN_REGISTERED:
            continue
        key = name.lower()
        if key in ModelHub._models_dict:
            raise ValueError(f"Cannot register {name!r} in mmpretrain's ModelHub: mmpretrain already has a model of "
                             f"that name ({ModelHub._models_dict[key].filepath}).")
        fields = {k: v for k, v in entry.items() if not k.startswith("_")}
        metainfo = Model.from_dict(fields, _filepath=entry["_metafile"])
        metainfo.config = str(root / entry["Config"])  # absolute, as ModelHub.register_model_index makes them
        ModelHub._models_dict[key] = metainfo  # the table register_model_index fills (it takes whole files only)
        _MMPRETRAIN_REGISTERED[name] = Path(entry["_metafile"])
        added.append(name)
    return added
