"""effvit_plugins: EfficientViT (MIT, MSRA), EdgeViT and EfficientFormer for OpenMMLab 2.x and Detectron2.

``import effvit_plugins`` (or ``custom_imports=dict(imports=['effvit_plugins'])`` in a config) registers our
backbones, necks and heads into mmseg/mmdet/mmpretrain when mmengine is installed. The framework-free cores
live in :mod:`effvit_plugins.models`; the Detectron2 adapter in :mod:`effvit_plugins.detectron2`.
"""
__version__ = "0.1.0"

try:
    import mmengine  # noqa: F401
except ImportError:  # plain PyTorch / Detectron2 use
    pass
else:
    from . import mm  # noqa: F401  (registers all modules)
