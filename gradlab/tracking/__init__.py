"""Experiment trackers: callbacks that send a run's metrics and layer statistics elsewhere.

W&B (wandb_tracker.py) and TensorBoard (tensorboard_tracker.py) sit side by side and log
per-layer statistics under the same names (common.layer_key). Nothing outside this package
knows about either library, and importing it imports neither, nor torch.
"""

from gradlab.tracking.common import TrackingError, layer_key
from gradlab.tracking.tensorboard_tracker import TensorBoardTracker, check_log_dir
from gradlab.tracking.wandb_tracker import (
    ID_FILE,
    MODES,
    WandbTracker,
    check_credentials,
    log_report,
    resolve_mode,
)

__all__ = [
    "ID_FILE",
    "MODES",
    "TensorBoardTracker",
    "TrackingError",
    "WandbTracker",
    "check_credentials",
    "check_log_dir",
    "layer_key",
    "log_report",
    "resolve_mode",
]
