"""OpenMMLab 2.x adapters (mmseg / mmdet / mmpretrain). Importing this registers everything."""
from .register import register_all_modules

register_all_modules()

__all__ = ["register_all_modules"]
