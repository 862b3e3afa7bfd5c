"""Fine-tuning from a state dict: what is loaded, what is frozen, what is recorded, and errors."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torchvision
from click.testing import CliRunner

from gradlab import finetune, stat_names as S
from gradlab.cli.main import cli
from gradlab.config import ModelSpec
from gradlab.errors import ModelError
from gradlab.models import build

CONFIG = """
preset = "ft"
[data]
name = "synthetic"
synthetic_shape = [3, 16, 16]
synthetic_size = 64
num_classes = 5
[recipe]
steps = 3
batch_size = 16
lr = 0.05
milestones = [2]
eval_every = 3
checkpoint_every = 3
record_every = 1
"""


def torchvision_state(depth: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():  # running statistics that differ from a fresh BN's, so that they are checked too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.state_dict()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    (d / "ft.toml").write_text(CONFIG)
    torch.save(torchvision_state(18, seed=11), d / "resnet18.pth")
    torch.save({"state_dict": torchvision_state(34, seed=12)}, d / "resnet34.pth")  # also: under a key
    return d


def gradlab(files, *args):
    return CliRunner().invoke(cli, ["train", *args, "--device", "cpu", "--wandb", "disabled",
                                    "--runs-dir", str(files / "runs")])


def test_frozen_backbone_keeps_the_file_weights_and_trains_a_new_classifier(files):
    r = gradlab(files, "resnet18", "--config", str(files / "ft.toml"), "--weights", str(files / "resnet18.pth"),
                "--freeze", "backbone")
    assert r.exit_code == 0, r.output
    run = files / "runs" / "ft-synthetic" / "resnet18-ft-frozen-s0"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    pretrained = torch.load(files / "resnet18.pth", weights_only=True)
    backbone = [k for k in pretrained if not k.startswith("fc.")]
    assert len(backbone) == 120
    for k in backbone:  # parameters and BN running statistics, bit for bit
        assert torch.equal(saved[k], pretrained[k]), k
    assert saved["fc.weight"].shape == (5, 512) and saved["fc.bias"].shape == (5,)

    layers = pd.read_parquet(run / "layers.parquet")
    params = layers[layers.stat.isin(S.PARAM_STATS)]
    assert set(params.layer) == {"fc.weight", "fc.bias"}  # frozen parameters have no rows at all
    fc = params[params.layer == "fc.weight"].set_index(["stat", "step"]).value
    assert all(fc[S.GRAD_NORM, s] > 0 for s in range(3))
    assert fc[S.UPDATE_NORM, 1] > 0 and fc[S.UPDATE_NORM, 2] > 0  # the classifier changed
    assert set(layers[layers.stat == S.ACT_GRAD_NORM].layer) == {"fc"}  # no gradient reaches the backbone
    assert {"conv1", "layer4.1.bn2"} <= set(layers[layers.stat == S.ACT_STD].layer)  # activations recorded

    spec = json.loads((run / "spec.json").read_text())
    assert spec["run"]["model"]["weights"] == str(files / "resnet18.pth")
    assert spec["model"]["finetune"]["trainable_params"] == 512 * 5 + 5
    assert spec["model"]["params"] == 11_179_077  # the whole network, as for any run


def test_one_channel_data_sums_the_rgb_filters_and_the_last_stage_trains(files):
    r = gradlab(files, "resnet18", "--preset", "quick", "--steps", "3", "--weights", str(files / "resnet18.pth"),
                "--freeze", "all-but-last-stage")
    assert r.exit_code == 0, r.output
    run = files / "runs" / "quick-digits" / "resnet18-ft-frozen-but-last-s0"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    pretrained = torch.load(files / "resnet18.pth", weights_only=True)
    assert torch.equal(saved["conv1.weight"], pretrained["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(saved["layer3.1.conv2.weight"], pretrained["layer3.1.conv2.weight"])
    assert not torch.equal(saved["layer4.1.conv2.weight"], pretrained["layer4.1.conv2.weight"])
    assert saved["fc.weight"].shape == (10, 512)
    layers = pd.read_parquet(run / "layers.parquet")
    grads = set(layers[layers.stat == S.GRAD_NORM].layer)
    assert "layer4.0.conv1.weight" in grads and "fc.weight" in grads
    assert not any(name.startswith(("conv1", "bn1", "layer1", "layer2", "layer3")) for name in grads)
    info = json.loads((run / "spec.json").read_text())["model"]["finetune"]
    assert info["first_conv"] == "RGB filters summed to 1 channel"


def test_weights_of_another_architecture_are_a_clear_error(files):
    r = gradlab(files, "resnet18", "--config", str(files / "ft.toml"), "--weights", str(files / "resnet34.pth"))
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert "holds weights of resnet34, which do not fit resnet18" in r.output
    assert not (files / "runs" / "ft-synthetic" / "resnet18-ft-s0").exists()


@pytest.mark.slow
def test_torchvision_weights_offline_name_the_file_option(files, tmp_path):
    # An empty hub cache and a proxy that refuses connections: the download fails, as offline.
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "hub"), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    p = subprocess.run([sys.executable, "-m", "gradlab", "train", "resnet18", "--weights", "torchvision",
                        "--config", "ft.toml", "--device", "cpu", "--wandb", "disabled", "--runs-dir", "offline"],
                       cwd=files, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "--weights FILE" in p.stderr and "resnet18-f37072fd.pth" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (files / "offline").exists()


def test_option_errors(files):
    r = gradlab(files, "resnet18", "--config", str(files / "ft.toml"), "--freeze", "backbone")
    assert r.exit_code == 2 or r.exit_code == 1
    assert "needs pretrained weights" in r.output
    r = gradlab(files, "resnet20", "--config", str(files / "ft.toml"), "--weights", "torchvision")
    assert r.exit_code == 1 and "ImageNet ResNets" in r.output and "--weights FILE" in r.output
    r = gradlab(files, "resnet18", "--config", str(files / "ft.toml"), "--weights", str(files / "missing.pth"))
    assert r.exit_code == 1 and "does not exist" in r.output
    assert not (files / "runs" / "ft-synthetic" / "resnet20-ft-s0").exists()


def test_a_plain_twin_takes_its_resnets_weights_without_the_shortcuts(files):
    state = torch.load(files / "resnet18.pth", weights_only=True)
    plain = build("plain18", num_classes=3)
    finetune.apply(plain, "plain18", state, "resnet18.pth")
    own = plain.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if k in own and not k.startswith("fc."))
    assert finetune.freeze(plain, "backbone") == 512 * 3 + 3
    assert isinstance(plain.layer1[0].bn1, finetune.FrozenBatchNorm2d)
    with pytest.raises(ModelError, match="freeze"):
        finetune.check(ModelSpec(name="resnet18", freeze="backbone"))
