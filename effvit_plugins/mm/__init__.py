"""OpenMMLab 2.x adapters (mmseg / mmdet / mmpretrain). Importing this registers everything and makes LVIS
evaluation work on numpy >= 1.24 (:mod:`effvit_plugins.mm.lvis_compat`)."""
from .lvis_compat import install as _install_lvis_compat
from .register import register_all_modules

_install_lvis_compat()
register_all_modules()

__all__ = ["register_all_modules"]
