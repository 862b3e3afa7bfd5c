"""How a model describes its own probe points, in depth order.

Recorders and reports use this list instead of guessing from module types. It is
plain data (no torch) so that it can be written into a run directory as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


# kind values
CONV, BN, NORM, FC, BRANCH, BLOCK = "conv", "bn", "norm", "fc", "branch", "block"


@dataclass(frozen=True)
class ProbePoint:
    """One place in the network whose output is worth watching.

    name:  module path as in ``model.named_modules()``.
    index: position in depth order (0 = closest to the input), unique per model.
    kind:  "conv" | "fc" (weighted layers); "bn" (BatchNorm) | "norm" (LayerNorm,
           GroupNorm, InstanceNorm, RMSNorm: no batch statistics);
           "branch" (the residual branch output F(x), right before the addition);
           "block" (a residual block's output, after the addition and ReLU).
    block: name of the residual block this point belongs to, or None (stem, head).
    role:  "main" for layers on the main path / residual branch, "shortcut" for
           projection shortcuts (options B/C), which do not count towards depth.
    relu_after: True when the next op applied to this output is a ReLU, so that the
           fraction of non-positive values equals the fraction ReLU will zero.
    relu_output: True when this output is a ReLU's output (a block's output after its final
           ReLU), so that its fraction of exact zeros is the fraction that ReLU zeroed.
           The recorder counts zeros (act_zero_frac) only at points with one of the two.
    bn_next: True when this output goes to the BatchNorm that is the next probe point and
           nowhere else (a conv followed by its BN). The recorder then takes this point's
           statistics from that BatchNorm: its mean and std from the batch statistics the
           BatchNorm computes anyway, its dL/dh from the BatchNorm's backward. (The recorder
           checks on its first recorded step that the BatchNorm's input is this output.)
    act_after: "sigmoid" | "tanh" when the next op applied to this output is that saturating
           activation (a zoo net built with ``act="sigmoid"``), "" otherwise: the recorder
           records act_sat_frac only there (and at points an nn.Sigmoid/nn.Tanh module follows).
    """

    name: str
    index: int
    kind: str
    block: str | None = None
    role: str = "main"
    relu_after: bool = False
    relu_output: bool = False
    bn_next: bool = False
    act_after: str = ""

    @property
    def next_to_relu(self) -> bool:
        """A ReLU follows this output or produced it: where act_zero_frac means something."""
        return self.relu_after or self.relu_output

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ProbePoint":
        return cls(**d)  # older run directories have no act_after: its default applies


def point(name: str, kind: str, block: str | None = None, role: str = "main", relu_after: bool = False,
          relu_output: bool = False, bn_next: bool = False, act_after: str = "") -> ProbePoint:
    """A probe point of a model's layout before the model numbers it (``index`` -1; zoo
    models number their layout in order: gradlab.models.base.ZooModel)."""
    return ProbePoint(name, -1, kind, block, role, relu_after, relu_output, bn_next, act_after)


def followed_by(act: str, follows: bool = True) -> dict:
    """``point``'s keywords for an output that the activation ``act`` ("relu", "sigmoid",
    "tanh") is applied to next (when ``follows``): relu_after for a ReLU, act_after else."""
    return {"relu_after": follows and act == "relu", "act_after": act if follows and act != "relu" else ""}


def numbered(points) -> tuple[ProbePoint, ...]:
    """``points`` with their positions as indices."""
    return tuple(replace(p, index=i) for i, p in enumerate(points))
