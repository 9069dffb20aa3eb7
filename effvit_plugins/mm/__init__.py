"""OpenMMLab 2.x adapters (mmseg / mmdet / mmpretrain). Importing this registers every module
(:mod:`effvit_plugins.mm.register`) and routes the cores' log records into mmengine's logger
(:mod:`effvit_plugins.mm.log_bridge`). ``import effvit_plugins`` imports it when mmengine is installed and then
applies the repairs of :mod:`effvit_plugins.mm.compat` and :mod:`effvit_plugins.compat.lvis`."""
from .log_bridge import route_core_logs
from .register import register_all_modules

route_core_logs()
register_all_modules()

__all__ = ["register_all_modules"]
