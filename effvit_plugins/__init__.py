"""effvit_plugins: efficient vision-transformer backbone families for OpenMMLab 2.x, Detectron2 and plain PyTorch.

The framework-free cores live in :mod:`effvit_plugins.models`, one module per family, each declaring its
:class:`~effvit_plugins.models.spec.FamilySpec` (``families()`` lists them); they import without mmengine and
Detectron2. The Detectron2 adapter is :mod:`effvit_plugins.detectron2`.

What ``import effvit_plugins`` changes (it is also what ``custom_imports=dict(imports=['effvit_plugins'])`` in a
config runs). Without mmengine installed: nothing. With mmengine:

* registration: the backbone and ImageNet head of every model family and our necks / decode heads, in our
  ``effvit_plugins`` scope and in mmseg / mmdet / mmpretrain (:mod:`effvit_plugins.mm.register`);
* logging: the logger ``effvit_plugins`` is set to INFO and passes its records to mmengine's current logger
  (:mod:`effvit_plugins.mm.log_bridge`). It still propagates to the root logger; duplicate console lines are
  avoided by the bridge, which leaves mmengine's console out when a root handler shows the record;
* three repairs (:mod:`effvit_plugins.compat`), announced by one INFO log line and all turned off by the
  environment variable ``EFFVIT_PLUGINS_NO_PATCHES=1`` (registration and logging stay):

  - mmengine's checkpoint loader for local files reads with ``torch.load(weights_only=True)`` plus an allow-list,
    and ``HistoryBuffer`` pickles without its method table: on torch >= 2.6 mmengine 0.10.7 cannot load its own
    runner checkpoints (``--resume``, ``load_from``, tools/test.py) otherwise; the same loader takes URLs and
    ``open-mmlab://`` / ``torchvision://`` names (hash-checked downloads) and converts our families' official files
    (:mod:`effvit_plugins.mm.compat`);
  - the optimizer's parameter groups are plain dicts, not mmengine ``ConfigDict`` objects, on which torch.compile
    of ``train_step`` (``compile=True`` in a config) fails (:data:`effvit_plugins.mm.compat.COMPILE_PATCH`);
  - ``lvis.eval`` sees ``np.float``, which numpy 1.24 removed and lvis 0.5.3 evaluates with (numpy itself is not
    changed; :mod:`effvit_plugins.compat.lvis`). The Detectron2 trainer applies this one itself when it builds
    an LVIS evaluator.
"""
from .version import __version__  # noqa: F401  (the one place of the version)

try:
    import mmengine  # noqa: F401
except ImportError:  # plain PyTorch / Detectron2 use
    pass
else:
    from . import mm  # noqa: F401  (registers all modules, routes our logs to mmengine's logger)
    from .compat import apply_patches as _apply_patches
    from .compat.lvis import PATCH as _LVIS_PATCH
    from .mm.compat import COMPILE_PATCH as _COMPILE_PATCH
    from .mm.compat import PATCH as _MMENGINE_PATCH

    _apply_patches(_MMENGINE_PATCH, _COMPILE_PATCH, _LVIS_PATCH)
