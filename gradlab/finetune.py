"""Fine-tuning: start a zoo model from pretrained weights, replace its classifier, freeze part of it.

Weights (``ModelSpec.weights``, ``--weights``):

* ``torchvision``: torchvision's default ImageNet weights of the same ResNet, through its own
  weights API (``torchvision.models.get_model_weights``), which downloads into the torch hub
  cache (``$TORCH_HOME``) when the network allows. ImageNet family only (resnet18…152; a
  plain twin gets its ResNet's weights without the projection shortcuts).
* a file: a state dict in the model's own format, which for the ImageNet family is
  torchvision's (also accepted: a dict holding it under "model" or "state_dict", e.g. a
  gradlab checkpoint.pt; "module." prefixes are removed).

The classifier (``fc``) is never loaded: it is the freshly initialised one for the dataset's
classes. A 1-channel dataset gets the pretrained first conv with its RGB filters summed
(as timm's ``adapt_input_conv`` does): a gray image then gives the response the RGB
network gives that image copied into the three channels. Other channel mismatches, and
weights of another architecture, are errors that name both.

Freezing (``ModelSpec.freeze``, ``--freeze``): ``none``; ``backbone`` (everything but the
classifier); ``all-but-last-stage`` (everything before the last stage: the last stage and
what follows it train). Frozen parameters get ``requires_grad=False`` and stay out of the
optimizer; the recorder watches trainable parameters only, so frozen layers have no
parameter rows (grad_norm, weight_norm, ...) in layers.parquet, and no act_grad_norm rows
where no gradient reaches them. Their activation statistics are recorded as usual. Frozen
BatchNorms normalize with their pretrained running statistics and never update them (like
torchvision's FrozenBatchNorm2d), so a frozen backbone is exactly the pretrained function.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab.config import FREEZE_CHOICES, TORCHVISION_WEIGHTS, ModelSpec
from gradlab.errors import ModelError
from gradlab.models import registry

CLASSIFIER = "fc."


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalizes with its running statistics and never updates them.

    It stays in training mode (so the recorder still sees its outputs); the state dict is
    BatchNorm2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def check(spec: ModelSpec) -> None:
    """Settings that make no sense together; raises ModelError."""
    if spec.freeze not in FREEZE_CHOICES:
        raise ModelError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, not {spec.freeze!r}")
    if spec.freeze != "none" and not spec.weights:
        raise ModelError(f"--freeze {spec.freeze} keeps layers at their initial values; it needs pretrained "
                         f"weights: add --weights FILE or --weights {TORCHVISION_WEIGHTS}")
    if spec.weights == TORCHVISION_WEIGHTS and registry.info(spec.name).arch != "imagenet":
        raise ModelError(f"torchvision has pretrained weights for the ImageNet ResNets (resnet18, 34, 50, 101, "
                         f"152) only, not for {spec.name}; use one of those, or --weights FILE with a state dict "
                         f"of {spec.name} (e.g. the 'model' of a gradlab checkpoint.pt)")


def load_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The pretrained state dict that ``spec.weights`` names (downloaded or read from disk),
    checked against the architecture (before any run directory is made)."""
    check(spec)
    if spec.weights == TORCHVISION_WEIGHTS:
        state = _torchvision_state(spec.name)
    else:
        state = _file_state(Path(spec.weights).expanduser())
    with torch.device("meta"):  # shapes and names only
        model = registry.build(spec.name)
    _backbone(model, spec.name, state, _source(spec))
    return state


def _source(spec: ModelSpec) -> str:
    return "torchvision's weights" if spec.weights == TORCHVISION_WEIGHTS else str(spec.weights)


def _torchvision_state(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    tv_name = f"resnet{registry.info(name).depth}"
    weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    try:
        return weights.get_state_dict(progress=sys.stderr.isatty())
    except (OSError, RuntimeError) as e:  # URLError/HTTPError/timeouts are OSErrors; a bad hash a RuntimeError
        raise ModelError(
            f"could not download torchvision's {tv_name} weights ({weights}) from {weights.url} "
            f"({type(e).__name__}: {e}). Without network access, download that file on another machine "
            f"and pass it with --weights FILE (or put it in the torch hub cache, $TORCH_HOME/hub/checkpoints)"
        ) from e


def _file_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist; give --weights FILE with a state dict, "
                         f"or --weights {TORCHVISION_WEIGHTS}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, refused by weights_only
        raise ModelError(f"{path} cannot be read as a state dict ({type(e).__name__}: {e}); "
                         f"save one with torch.save(model.state_dict(), FILE)") from e
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state dict (name -> tensor), nor one under 'model' or "
                         f"'state_dict'; save one with torch.save(model.state_dict(), FILE)")
    return {re.sub(r"^(module\.)+", "", k): v for k, v in state.items()}


def guess_architecture(state: dict[str, torch.Tensor]) -> str:
    """The zoo name whose state dict has these keys, for error messages ("unknown" if none)."""
    blocks: dict[int, set[int]] = {}
    for key in state:
        m = re.match(r"layer(\d+)\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    counts = tuple(len(blocks[s]) for s in sorted(blocks))
    family = "resnet" if any(".downsample." in k or ".shortcut." in k for k in state) else "plain"
    bottleneck = any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in state)
    for depth, (bneck, layers) in registry.IMAGENET.items():
        if counts == layers and bneck == bottleneck:
            return f"{family}{depth}"
    if len(counts) == 3 and len(set(counts)) == 1:
        return f"{family}{6 * counts[0] + 2} (CIFAR)"
    return "an unknown architecture"


def _backbone(model: nn.Module, name: str, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` that ``model`` takes (all but the classifier); an error naming
    both architectures when the keys do not match."""
    wanted = {k for k in model.state_dict() if not k.startswith(CLASSIFIER)}
    given = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER)}
    if getattr(model, "family", None) == "plain":  # a plain twin takes its ResNet's weights minus shortcuts
        given = {k: v for k, v in given.items() if k in wanted or ".downsample." not in k}
    missing, extra = sorted(wanted - set(given)), sorted(set(given) - wanted)
    if missing or extra:
        detail = "; ".join(part for part in (
            f"{len(missing)} missing, e.g. {', '.join(missing[:3])}" if missing else "",
            f"{len(extra)} unexpected, e.g. {', '.join(extra[:3])}" if extra else "") if part)
        raise ModelError(f"{source} holds weights of {guess_architecture(state)}, which do not fit {name} "
                         f"({detail}); use weights saved from {name}")
    return given


def apply(model: nn.Module, name: str, state: dict[str, torch.Tensor], source: str) -> bool:
    """Load ``state`` into ``model`` (in place) except its classifier; see the module doc.
    Returns whether the first conv was adapted from RGB to one channel."""
    own = model.state_dict()
    given = _backbone(model, name, state, source)
    first_conv = next((f"{p.name}.weight" for p in model.probe_points() if p.kind == "conv"), None)
    adapted = False
    for key, value in list(given.items()):
        want = own[key].shape
        if value.shape == want:
            continue
        if key == first_conv and value.dim() == 4 and value.shape[1] == 3 and want[1] == 1 \
                and value.shape[0] == want[0] and value.shape[2:] == want[2:]:
            given[key] = value.sum(dim=1, keepdim=True)  # RGB filters summed: see the module doc
            adapted = True
            continue
        raise ModelError(f"{source}: {key} has shape {tuple(value.shape)} but {name} on this dataset needs "
                         f"{tuple(want)}; pretrained first convs adapt from 3 to 1 input channels only")
    given.update({k: v for k, v in own.items() if k.startswith(CLASSIFIER)})
    model.load_state_dict(given, strict=True)
    return adapted


def freeze(model: nn.Module, mode: str) -> int:
    """Freeze per ``mode`` (in place); returns the number of trainable parameters left."""
    if mode not in FREEZE_CHOICES:
        raise ModelError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, not {mode!r}")
    names = [n for n, _ in model.named_parameters()]
    if mode == "none":
        first_trainable = 0
    elif mode == "backbone":
        first_trainable = next((i for i, n in enumerate(names) if n.startswith(CLASSIFIER)), len(names))
    else:
        stages = [n for n, _ in model.named_children() if re.fullmatch(r"layer\d+", n)]
        if not stages:
            raise ModelError(f"{type(model).__name__} has no stages (layer1, layer2, ...); use --freeze backbone")
        last = max(stages, key=lambda n: int(n[5:]))
        first_trainable = next(i for i, n in enumerate(names) if n.startswith(f"{last}."))
    frozen = set(names[:first_trainable])
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d and child.affine and not child.weight.requires_grad:
                fixed = FrozenBatchNorm2d(child.num_features, child.eps, child.momentum)
                fixed.load_state_dict(child.state_dict())
                fixed.requires_grad_(False)
                setattr(parent, child_name, fixed)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def prepare(model: nn.Module, spec: ModelSpec, state: dict[str, torch.Tensor] | None) -> dict:
    """Load ``state`` (None: resuming, the checkpoint has the weights) and freeze per ``spec``;
    returns what spec.json records about it."""
    check(spec)
    adapted = False
    if state is not None:
        adapted = apply(model, spec.name, state, _source(spec))
    trainable = freeze(model, spec.freeze)
    return {"weights": spec.weights, "freeze": spec.freeze, "trainable_params": trainable,
            "first_conv": "RGB filters summed to 1 channel" if adapted else "as pretrained",
            "classifier": "new: fc initialised for the dataset's classes"}
