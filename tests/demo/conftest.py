import numpy as np
import pytest
from PIL import Image

@pytest.fixture(scope="session")
def image_sizes():
    """The generated images of :func:`image_folder`: file name -> (height, width)."""
    return {"a.jpg": (96, 128), "b.png": (80, 64)}


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, image_sizes):
    """A folder of two generated images of different sizes and formats."""
    folder = tmp_path_factory.mktemp("demo_images")
    for seed, (name, (h, w)) in enumerate(image_sizes.items()):
        Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), np.uint8)).save(folder / name)
    return folder
