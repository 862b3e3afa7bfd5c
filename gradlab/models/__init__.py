"""The model zoo: paired plain/residual networks by name.

    build("resnet20")  names("cifar")  info("plain56")  describe(model, "resnet20")

Importing this package does not import torch; ``build`` does.
"""

from gradlab.models.probe_points import ProbePoint
from gradlab.models.registry import ModelInfo, build, describe, info, names

__all__ = ["ModelInfo", "ProbePoint", "build", "describe", "info", "names"]
