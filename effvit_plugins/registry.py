"""Our own OpenMMLab scope, ``effvit_plugins``: ``type='effvit_plugins.EfficientViTMIT'`` resolves from any scope.

The same classes are also registered under their plain names into the mmseg, mmdet and mmpretrain MODELS
registries (see :mod:`effvit_plugins.mm.register`), so ``type='EfficientViTMIT'`` works under
``default_scope='mmseg'``/``'mmdet'``/``'mmpretrain'``.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, scope="effvit_plugins", locations=["effvit_plugins.mm"])
