"""Generators of tiny datasets in the real folder layouts (for the demo and the tests), and
:mod:`effvit_plugins.datasets.layouts`, where each dataset's files are expected (the "dataset missing" messages).

The generators themselves need only numpy and Pillow (no torch / OpenMMLab code is used).
"""
from .ade20k_demo import generate_ade20k_demo
from .cityscapes_demo import CLASSES as CITYSCAPES_CLASSES
from .cityscapes_demo import generate_cityscapes_demo, is_complete, render_scene
from .coco_demo import COCO_DEMO_CLASSES, LVIS_DEMO_CLASSES, generate_coco_demo, generate_lvis_demo, render_shapes
from .imagefolder_demo import CLASSES as IMAGEFOLDER_CLASSES
from .imagefolder_demo import generate_imagefolder

__all__ = ["CITYSCAPES_CLASSES", "COCO_DEMO_CLASSES", "IMAGEFOLDER_CLASSES", "LVIS_DEMO_CLASSES",
           "generate_ade20k_demo", "generate_cityscapes_demo", "generate_coco_demo", "generate_imagefolder", "generate_lvis_demo",
           "is_complete", "render_scene", "render_shapes"]
