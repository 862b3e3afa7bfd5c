"""The model zoo: paired plain/residual networks by name.

    build("resnet20")  names("cifar")  info("plain56")  describe(model, "resnet20")
    model_name("plain", 56)  # "plain56": a family at a depth, in one architecture

Importing this package does not import torch; ``build`` does.
"""

from gradlab.models.probe_points import ProbePoint
from gradlab.models.registry import ModelInfo, build, describe, info, model_name, names

__all__ = ["ModelInfo", "ProbePoint", "build", "describe", "info", "model_name", "names"]
