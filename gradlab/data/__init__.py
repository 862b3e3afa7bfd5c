"""Training data: datasets as whole uint8 tensors (datasets.py), the device-resident batch
loader (loader.py), and ImageNet-format folders streamed from disk (image_folders.py).

    ds = gradlab.data.load(DataSpec(name="digits"))     # train/test tensors and their shape
"""

from gradlab.data.datasets import DATASETS, OFFLINE_HINT, Augment, Dataset, default_data_dir, load

__all__ = ["DATASETS", "OFFLINE_HINT", "Augment", "Dataset", "default_data_dir", "load"]
