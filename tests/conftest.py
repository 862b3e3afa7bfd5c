"""Suite-wide settings: one torch thread (tiny tensors run faster without threading on
2 cores) and W&B kept offline, whatever the machine's environment says, writing into a
temporary folder rather than the checkout."""

import os
import tempfile

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="gradlab-tests-wandb-"))


@pytest.fixture(scope="session")
def native_cache(tmp_path_factory):
    """A cache folder for the fused CPU kernels: one compile for the session, none in ~/.cache."""
    return tmp_path_factory.mktemp("native-cache")


@pytest.fixture
def fresh_native(monkeypatch, native_cache):
    """gradlab.recorder.native as on a machine with its defaults (no GRADLAB_NATIVE, no $CC),
    compiling into ``native_cache``; forgotten before and after the test."""
    from gradlab.recorder import native

    monkeypatch.setenv("XDG_CACHE_HOME", str(native_cache))
    monkeypatch.delenv("GRADLAB_NATIVE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    native.reset()
    yield
    native.reset()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
