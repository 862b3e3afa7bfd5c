"""Suite-wide settings: one torch thread (tiny tensors run faster without threading on
2 cores) and W&B kept offline, whatever the machine's environment says, writing into a
temporary folder rather than the checkout."""

import os
import tempfile

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="gradlab-tests-wandb-"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
