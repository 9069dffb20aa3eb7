from setuptools import find_packages, setup

setup(
    name="effvit_plugins",
    version="0.1.0",
    description="EfficientViT (MIT, MSRA), EdgeViT and EfficientFormer for OpenMMLab 2.x and Detectron2",
    packages=find_packages(include=["effvit_plugins", "effvit_plugins.*"]),
    package_data={"effvit_plugins": ["data/*.json"]},
    python_requires=">=3.10",
    install_requires=["torch", "mmengine>=0.10,<1.0"],
)
