"""Shattered gradients (Balduzzi et al. 2017): the input-gradient of a random network
along a line of inputs, plain against residual, against depth.

The paper's setting: a scalar input x on a grid of 256 points in [-2, 2], fully-connected
rectifier layers of width 200, He initialization, with batch normalization. The gradient
g(x) = df/dx of a shallow net is piecewise constant ("brown noise"); in a deep plain net it
becomes "white noise" and the correlation between gradients at different inputs decays as
2^-L (the paper's Theorem 1, feedforward rectifier nets); skip connections slow the decay
down to sublinear, ~1/sqrt(L) (their resnets with batch normalization).

The networks (one weight draw per seed, shared by the plain net and its residual twin):

    h_0 = w_in x                         (+ b_in without BN)
    a_l = relu(BN(h_l))                  (relu(h_l) without BN)
    plain:    h_{l+1} = W_{l+1} a_l      residual: h_{l+1} = h_l + W_{l+1} a_l
    f_L(x) = v_L . a_{L-1}               depth L = number of rectifier layers on the path

so a depth-L net has L-1 blocks and every depth up to ``max_depth`` is read from one net
(each depth has its own output weights v_L). The residual blocks are pre-activation ones
(BN-ReLU-linear, He et al. 2016); the plain twin is the same stack without the addition.
BN normalizes with the statistics of the whole grid as one batch, as in the paper, frozen
at those values, so that f_L is a function of x alone and g = f_L'(x) is exact. Gradients
are propagated forward (forward-mode differentiation: one tangent per layer, exact, and
all depths in one pass); tests check them against reverse-mode autograd.

Measures, per net (seed), family and depth, all *uncentered* correlations (E[g(x)] = 0
over initializations, by the symmetry of the output weights, so this is the correlation of
the paper's covariance C(x, x'); a linear net's constant gradient gives exactly 1):

    autocorr(k) = sum_i g_i g_{i+k} / sqrt(sum_i g_i^2 sum_i g_{i+k}^2)   lags k >= 1;
                  k = 1 is the correlation between gradients at neighbouring inputs
    pairs       = mean over pairs i != j of g_i g_j / mean_i g_i^2
                = the average correlation between gradients at two distinct inputs,
                  the quantity Theorem 1 predicts to be 2^-L for plain rectifier nets
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from gradlab.analyses.result import ProbeResult
from gradlab.errors import ConfigError
from gradlab.families import PLAIN, RESNET
from gradlab.progress import progress_bar

__all__ = ["KIND", "ShatteringSettings", "input_gradients", "predicted", "shattering"]

KIND = "probe-shattering"
FAMILIES = (PLAIN, RESNET)  # the plain nets and their residual twins, with the same weights
ACTIVATIONS = ("relu", "linear")  # linear: a known answer (constant gradient)
BN_EPS = 1e-5


@dataclass(frozen=True)
class ShatteringSettings:
    """What `gradlab analyze shattering` measures; the defaults are the paper's setting."""

    max_depth: int = 50
    width: int = 200
    points: int = 256
    low: float = -2.0
    high: float = 2.0
    seeds: int = 10  # nets per family, seeds 0 .. seeds-1
    batch_norm: bool = True
    max_lag: int | None = None  # longest autocorrelation lag; None: min(64, points - 1)
    activation: str = "relu"
    example_depths: tuple[int, ...] = ()  # gradients kept for the figure; () = (1, max_depth)

    def validated(self) -> "ShatteringSettings":
        def whole(name, value, least):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be a whole number >= {least}, not {value!r}")

        whole("max_depth", self.max_depth, 1)
        whole("width", self.width, 1)
        whole("points", self.points, 3)
        whole("seeds", self.seeds, 1)
        max_lag = min(64, self.points - 1) if self.max_lag is None else self.max_lag
        whole("max_lag", max_lag, 1)
        if max_lag >= self.points:
            raise ConfigError(f"max_lag ({max_lag}) must be below the number of points ({self.points})")
        if not self.low < self.high:
            raise ConfigError(f"the input line needs low < high, got [{self.low}, {self.high}]")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {self.activation!r}")
        examples = self.example_depths or (1, self.max_depth)
        bad = [d for d in examples if not 1 <= d <= self.max_depth]
        if bad:
            raise ConfigError(f"example depths {bad} lie outside 1..{self.max_depth}")
        fixed = {"max_lag": max_lag, "example_depths": tuple(sorted(set(examples)))}
        return ShatteringSettings(**{**asdict(self), **fixed})


def predicted(family: str, depth) -> float:
    """The paper's predicted correlation: 2^-L (plain rectifier nets), 1/sqrt(L) (BN resnets)."""
    return 2.0 ** -depth if family == PLAIN else 1.0 / math.sqrt(depth)


@dataclass
class _Weights:
    """One weight draw, shared by the plain net and its residual twin."""

    w_in: torch.Tensor  # [width]
    b_in: torch.Tensor  # [width]
    blocks: list[torch.Tensor] = field(default_factory=list)  # [width, width] each
    biases: list[torch.Tensor] = field(default_factory=list)
    heads: list[torch.Tensor] = field(default_factory=list)  # [width] each

    @classmethod
    def draw(cls, s: ShatteringSettings, seed: int) -> "_Weights":
        """He-normal weights; biases (used without BN only) as torch's nn.Linear default."""
        g = torch.Generator().manual_seed(seed)
        w = s.width
        w_in = torch.randn(w, generator=g) * math.sqrt(2.0)
        b_in = torch.rand(w, generator=g) * 2 - 1  # fan_in 1: U(-1, 1)
        blocks, biases, heads = [], [], []
        for _ in range(s.max_depth - 1):
            blocks.append(torch.randn(w, w, generator=g) * math.sqrt(2.0 / w))
            biases.append((torch.rand(w, generator=g) * 2 - 1) / math.sqrt(w))
        for _ in range(s.max_depth):
            heads.append(torch.randn(w, generator=g) / math.sqrt(w))
        return cls(w_in, b_in, blocks, biases, heads)


def _forward(weights: _Weights, x: torch.Tensor, residual: bool, s: ShatteringSettings):
    """Outputs f_L(x) and exact gradients f_L'(x) for every depth L: two [max_depth, points] tensors.

    The tangent dh = dh/dx is carried along with h. BN statistics come from the grid,
    detached (frozen), so autograd through the returned outputs agrees with the tangents.
    """
    bias = not s.batch_norm
    h = x[:, None] * weights.w_in + (weights.b_in if bias else 0.0)
    dh = weights.w_in.expand(len(x), -1)
    outs, grads = [], []
    for depth in range(1, s.max_depth + 1):
        a, da = h, dh
        if s.batch_norm:
            mean = a.detach().mean(0)
            std = torch.sqrt(a.detach().var(0, unbiased=False) + BN_EPS)
            a, da = (a - mean) / std, da / std
        if s.activation == "relu":
            on = (a > 0).to(a.dtype)
            a, da = a * on, da * on
        head = weights.heads[depth - 1]
        outs.append(a @ head)
        grads.append(da @ head)
        if depth < s.max_depth:
            w = weights.blocks[depth - 1]
            z, dz = a @ w.T, da @ w.T
            if bias:
                z = z + weights.biases[depth - 1]
            h, dh = (h + z, dh + dz) if residual else (z, dz)
    return torch.stack(outs), torch.stack(grads)


def input_gradients(settings: ShatteringSettings, seed: int, residual: bool) -> torch.Tensor:
    """g_L(x_i) = df_L/dx at every grid point for every depth L: [max_depth, points]."""
    s = settings.validated()
    x = torch.linspace(s.low, s.high, s.points)
    with torch.no_grad():
        return _forward(_Weights.draw(s, seed), x, residual, s)[1]


def _autocorr(g: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Uncentered correlation of g [..., n] with itself shifted by 1..max_lag: [..., max_lag]."""
    out = []
    for k in range(1, max_lag + 1):
        a, b = g[..., :-k], g[..., k:]
        out.append((a * b).sum(-1) / torch.sqrt((a * a).sum(-1) * (b * b).sum(-1)))
    return torch.stack(out, -1)


def _pairs(g: torch.Tensor) -> torch.Tensor:
    """Mean of g_i g_j over pairs i != j over the mean of g_i^2: [...]."""
    n = g.shape[-1]
    sq = (g * g).sum(-1)
    return (g.sum(-1) ** 2 - sq) / ((n - 1) * sq)


def shattering(settings: ShatteringSettings | None = None, progress: bool | None = None) -> ProbeResult:
    """Measure plain and residual nets; tables ``autocorr``, ``pairs`` and ``gradients``."""
    s = (settings or ShatteringSettings()).validated()
    x = torch.linspace(s.low, s.high, s.points)
    depths = torch.arange(1, s.max_depth + 1)
    autocorr_rows, pair_rows, example_rows = [], [], []
    bar = progress_bar(s.seeds * len(FAMILIES), "shattering", "net", progress)
    with torch.no_grad():
        for seed in range(s.seeds):
            weights = _Weights.draw(s, seed)
            for family in FAMILIES:
                g = _forward(weights, x, family == RESNET, s)[1].double()  # [depth, points]
                ac = _autocorr(g, s.max_lag).numpy()
                pc = _pairs(g).numpy()
                for i, depth in enumerate(depths.tolist()):
                    pair_rows.append((family, depth, seed, float(pc[i])))
                    autocorr_rows.extend((family, depth, seed, k + 1, float(ac[i, k])) for k in range(s.max_lag))
                if seed == 0:
                    for depth in s.example_depths:
                        example_rows.extend((family, depth, seed, float(xi), float(gi))
                                            for xi, gi in zip(x.tolist(), g[depth - 1].tolist()))
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    tables = {
        "autocorr": pd.DataFrame(autocorr_rows, columns=["family", "depth", "seed", "lag", "corr"]),
        "pairs": pd.DataFrame(pair_rows, columns=["family", "depth", "seed", "corr"]),
        "gradients": pd.DataFrame(example_rows, columns=["family", "depth", "seed", "x", "grad"]),
    }
    settings_record = {
        **asdict(s),
        "example_depths": list(s.example_depths),
        "architecture": "fully-connected, pre-activation residual blocks (BN-ReLU-linear) and their plain "
                        "twins with the same weights; depth = rectifier layers on the path",
        "bn_statistics": "the whole grid as one batch, frozen" if s.batch_norm else "none",
        "predicted": {PLAIN: "2^-L (Theorem 1, feedforward rectifier nets)",
                      RESNET: "1/sqrt(L) (resnets with batch normalization)"},
    }
    return ProbeResult(KIND, tables, settings_record, _env())


def _env() -> dict:
    from gradlab.environment import describe

    return describe(torch.device("cpu"))
