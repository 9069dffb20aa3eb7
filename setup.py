"""Packaging of effvit_plugins. ``pip install .`` needs torch only and gives the framework-free cores
(:mod:`effvit_plugins.models`, the checkpoint converters); the extras add the frameworks:

    pip install .[mm]           OpenMMLab 2.x (mmcv must have its compiled ops: docs/setup.md)
    pip install .[detectron2]   Detectron2's runtime requirements (Detectron2 itself: from source, its own docs)
    pip install .[deploy]       ONNX export, its onnxruntime check and the runtime of exported detectors
    pip install .[test]         what the test suite needs besides the above

The wheel and the sdist also carry ``effvit_plugins/.mim/`` -- the configs, the tools and the model index -- where
OpenMMLab's ``mim`` looks for them, as mmdet / mmseg ship theirs (``mim search / train / test effvit_plugins``).

Why ``.mim/*`` are relative symbolic links committed in git (``configs -> ../../configs`` ...), not links or copies
made by this file at build time: a fresh clone and an editable install (setuptools' PEP 660 finder maps the
package to this checkout) have them without running any build step, and nothing is generated into the source tree,
so ``git status`` stays clean; the repository's own scanners start at ``configs/`` or ``tests/`` and never descend
into ``effvit_plugins/.mim`` (``glob('**')`` skips hidden folders, ``os.walk`` does not follow links). A wheel or sdist
build follows the links (setuptools' file globbing does), so both hold real copies. Links need a file system
with symbolic links (on Windows: git's ``core.symlinks``).
"""
import glob
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "effvit_plugins"


def read_version() -> str:
    """``__version__`` from effvit_plugins/version.py, without importing the package (that would import torch)."""
    scope = {}
    with open(os.path.join(HERE, PACKAGE, "version.py"), encoding="utf-8") as f:
        exec(f.read(), scope)
    return scope["__version__"]


def mim_files() -> list:
    """Every file under effvit_plugins/.mim (following its links), relative to the package: its package data."""
    pkg = os.path.join(HERE, PACKAGE)
    files = glob.glob(os.path.join(pkg, ".mim", "**", "*"), recursive=True)
    return sorted(os.path.relpath(p, pkg) for p in files
                  if os.path.isfile(p) and "__pycache__" not in p.split(os.sep) and not p.endswith(".pyc"))


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

# Compatible ranges around the pinned, tested stack (requirements.txt / scripts/setup.sh install the pins).
EXTRAS = {
    # mmcv from the registry has no compiled ops for current torch: build it with MMCV_WITH_OPS=1 (docs/setup.md)
    "mm": ["mmengine>=0.10.7,<0.11", "mmcv>=2.1.0,<2.2.0", "mmdet>=3.3.0,<3.4", "mmsegmentation>=1.2.2,<1.3",
           "mmpretrain>=1.2.0,<1.3"],
    # Detectron2's runtime requirements as its setup.py states them (commit 02b5c4e); Detectron2 itself publishes
    # no wheels for current torch and is built from source (scripts/setup.sh, Detectron2's install docs)
    "detectron2": ["fvcore>=0.1.5,<0.1.6", "iopath>=0.1.7,<0.1.10", "omegaconf>=2.1,<2.4", "hydra-core>=1.1",
                   "yacs>=0.1.8", "termcolor>=1.1", "tabulate", "cloudpickle", "tqdm>4.29.0", "tensorboard", "black",
                   "matplotlib", "Pillow>=7.1", "packaging", "pycocotools>=2.0.2"],
    # opencv: the runtime's resize (effvit_plugins.deploy.OnnxDetector), the same cv2 resize as mmcv's pipeline
    "deploy": ["onnx>=1.14", "onnxruntime>=1.16", "opencv-python>=4.5"],
    # openmim is not listed: its dependency opendatalab pins setuptools~=60.2 and downgrades requests/rich/tqdm;
    # install it with `pip install --no-deps openmim` plus its other requirements (scripts/setup.sh does)
    "test": ["pytest", "timm>=1.0", "numpy", "Pillow", "pycocotools", "lvis", "cityscapesscripts", "ftfy", "regex"],
}

setup(
    name=PACKAGE,
    version=read_version(),
    description="EfficientViT (MIT, MSRA), EdgeViT and EfficientFormer for OpenMMLab 2.x and Detectron2",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license_expression="Apache-2.0",
    license_files=["LICENSE", "NOTICE"],
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),  # '.mim' is no package name: data only
    package_data={PACKAGE: ["data/*.json"] + mim_files()},
    python_requires=">=3.10",
    install_requires=["torch"],
    extras_require=EXTRAS,
    classifiers=[
        "Development Status :: 4 - Beta",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
