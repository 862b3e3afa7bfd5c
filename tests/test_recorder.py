"""Recorder: known answers, hooks, schedule, frames, state (CPU, small modules)."""

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab import stat_names as S
from gradlab.errors import RecorderError
from gradlab.models.probe_points import ProbePoint
from gradlab.recorder import Recorder, watch
from gradlab.recorder.recorder import FRAME_COLUMNS
from gradlab.recorder.targets import default_probe_points, resolve, strip_prefixes

REL = 1e-6


def linear(weight, relu=False):
    """nn.Sequential(Linear(3, 2, bias=False)[, ReLU(inplace)]) with the given weight."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(weight)
    return nn.Sequential(lin, nn.ReLU(inplace=True)) if relu else nn.Sequential(lin)


X = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]])
W = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # h = [[1, 2], [0, 0]]
# what linear(W) records: no residual blocks, and no ReLU for act_zero_frac
LINEAR_STATS = set(S.DEFAULT_STATS) - {S.BRANCH_RATIO, S.ACT_ZERO_FRAC}


def value(df, stat, layer, step=0):
    rows = df[(df.stat == stat) & (df.layer == layer) & (df.step == step)]
    assert len(rows) == 1, (stat, layer, step, rows)
    return float(rows.value.iloc[0])


def all_hooks(model):
    """Hooks on the model's modules, a forward wrapped by the recorder counting as one
    (gradlab.recorder.forward_wrap)."""
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + ("forward" in vars(m))
        n += len(getattr(m, "_backward_pre_hooks", {}))
    return n


def train_step(model, rec, x, loss_fn, opt=None, step=None):
    out = model(x)
    loss = loss_fn(out)
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)
    loss.backward()
    rec.step(step)
    if opt is not None:
        opt.step()
    return loss


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_linear_known_answers(dtype):
    model = linear(W).to(dtype)
    with watch(model, every=1) as rec:
        train_step(model, rec, X.to(dtype), lambda h: (h**2).sum())  # dL/dh = 2h
        df = rec.frame()
    # h = [[1, 2], [0, 0]]; dL/dh = [[2, 4], [0, 0]]; dL/dW = (dL/dh)^T X = [[2, 4, 4], [4, 8, 8]]
    assert value(df, S.ACT_MEAN, "0") == pytest.approx(0.75, rel=REL)
    assert value(df, S.ACT_STD, "0") == pytest.approx(math.sqrt(1.25 - 0.75**2), rel=REL)
    assert S.ACT_ZERO_FRAC not in set(df.stat)  # no ReLU after or before the point: not counted
    assert value(df, S.ACT_GRAD_NORM, "0") == pytest.approx(math.sqrt(20), rel=REL)
    assert value(df, S.GRAD_NORM, "0.weight") == pytest.approx(6 * math.sqrt(5), rel=REL)
    assert value(df, S.WEIGHT_NORM, "0.weight") == pytest.approx(math.sqrt(2), rel=REL)
    assert value(df, S.GRAD_WEIGHT_RATIO, "0.weight") == pytest.approx(3 * math.sqrt(10), rel=REL)
    assert math.isnan(value(df, S.UPDATE_NORM, "0.weight"))  # first record
    assert set(df.stat) == LINEAR_STATS
    assert (df[df.layer == "0"].kind == "fc").all() and (df["index"] == 0).all()


def test_relu_after_counts_non_positive_and_grad_is_pre_inplace_relu():
    model = linear([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], relu=True)  # h = [[1, -2], [0, 0]]
    assert default_probe_points(model)[0].relu_after
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    with watch(model, every=1) as rec:
        train_step(model, rec, X, lambda r: ((r - target) ** 2).sum())
        df = rec.frame()
    assert value(df, S.ACT_ZERO_FRAC, "0") == 0.75  # three of four are <= 0
    assert value(df, S.ACT_MEAN, "0") == pytest.approx(-0.25, rel=REL)  # stats before the in-place ReLU
    # dL/dr = 2(r - t) = [[2, 0], [-2, -2]]; dL/dh = dL/dr * (h > 0) = [[2, 0], [0, 0]]
    assert value(df, S.ACT_GRAD_NORM, "0") == pytest.approx(2.0, rel=REL)


class Block(nn.Module):
    """x + F(x) with F(x) = scale * x (a bias-free linear layer)."""

    def __init__(self, scale: float):
        super().__init__()
        self.f = nn.Linear(4, 4, bias=False)
        self.branch_out = nn.Identity()
        with torch.no_grad():
            self.f.weight.copy_(scale * torch.eye(4))

    def forward(self, x):
        return x + self.branch_out(self.f(x))


class Residual(nn.Module):
    """One residual block, with its probe points."""

    def __init__(self, scale: float):
        super().__init__()
        self.block = Block(scale)

    def forward(self, x):
        return self.block(x)

    def probe_points(self):
        return [
            ProbePoint("block.f", 0, "fc", "block"),
            ProbePoint("block.branch_out", 1, "branch", "block"),
        ]


@pytest.mark.parametrize("scale", [0.0, 2.0, 0.5])
def test_branch_ratio_known_answers(scale):
    model = Residual(scale)
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 1.0, 1.0, -1.0]])
    with watch(model, every=1) as rec:
        train_step(model, rec, x, lambda y: y.square().sum())
        df = rec.frame()
    row = df[df.stat == S.BRANCH_RATIO]
    assert list(row.layer) == ["block"] and list(row.kind) == ["block"] and list(row["index"]) == [1]
    assert float(row.value.iloc[0]) == pytest.approx(scale, rel=REL, abs=0)
    # the branch point's own statistics are those of F(x)
    assert value(df, S.ACT_MEAN, "block.branch_out") == pytest.approx(scale * float(x.mean()), rel=REL, abs=1e-7)



def test_a_forward_the_user_set_on_a_module_is_watched_and_given_back():
    """The recorder wraps a watched module's forward (gradlab.recorder.forward_wrap): one the
    user set on the instance is the one that runs, is measured, and is there again after."""
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    own = model[0].forward

    def doubled(x):
        return 2 * own(x)

    model[0].forward = doubled
    with watch(model, every=2, dense_until=0) as rec:
        for _ in range(3):  # steps 0 and 2 recorded, 1 not: wrapped, unwrapped, wrapped
            train_step(model, rec, X, lambda y: y.sum())
            assert vars(model[0]).get("forward") is doubled or rec.recording
        df = rec.frame()
    assert vars(model[0])["forward"] is doubled and "forward" not in vars(model[1])
    with torch.no_grad():
        assert value(df, S.ACT_MEAN, "0", 2) == pytest.approx(float(doubled(X).mean()), rel=REL)

def test_update_norm_between_recorded_steps():
    model = linear(W)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    with watch(model, every=2, dense_until=0) as rec:
        for _ in range(3):
            train_step(model, rec, X, lambda h: (h**2).sum(), opt)
            grads.append(model[0].weight.grad.clone())
        df = rec.frame()
    assert sorted(set(df.step)) == [0, 2]
    assert math.isnan(value(df, S.UPDATE_NORM, "0.weight", 0))
    # at step 2 (recorded before opt.step): W2 - W0 = -0.1 * (g0 + g1)
    expected = float((0.1 * (grads[0] + grads[1])).norm())
    assert value(df, S.UPDATE_NORM, "0.weight", 2) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- hooks and lifecycle


def test_hooks_removed_on_stop_and_between_unscheduled_steps():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    x = torch.randn(2, 2, 4, 4)
    rec = watch(model, every=3, dense_until=0)
    # armed for step 0: one forward hook per probe point (the conv's only checks that its
    # output is what its BN takes in; the BN's hook measures both), and until the first
    # step a pre-hook per module that reads the forward order (gradlab.recorder.forward_order)
    assert all_hooks(model) == 3 + len(list(model.modules()))
    train_step(model, rec, x, lambda y: y.sum())
    assert all_hooks(model) == 0  # step 1 is not recorded: nothing attached
    train_step(model, rec, x, lambda y: y.sum())
    train_step(model, rec, x, lambda y: y.sum())
    assert all_hooks(model) == 2  # step 3 is, and the conv needs no hook once checked
    rec.stop()
    assert all_hooks(model) == 0
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert sorted(set(rec.frame().step)) == [0]
    rec.stop()  # idempotent


def test_context_manager_stops_and_frame_stays_readable():
    model = linear(W)
    with gradlab.watch(model, every=1) as rec:
        train_step(model, rec, X, lambda h: h.sum())
    assert all_hooks(model) == 0
    assert len(rec.frame()) > 0
    with pytest.raises(RecorderError):
        rec.step()


def test_recorder_explicit_start_and_enter():
    model = linear(W)
    rec = Recorder(model, every=1)
    with rec:
        train_step(model, rec, X, lambda h: h.sum())
    assert set(rec.frame().step) == {0}


def test_double_watch_raises_until_stopped():
    model = linear(W)
    rec = watch(model)
    with pytest.raises(RecorderError, match="already watched"):
        watch(model)
    with pytest.raises(RecorderError):
        rec.start()
    rec.stop()
    watch(model).stop()  # fine once the first one stopped


def test_eval_and_no_grad_forwards_are_not_recorded():
    model = linear(W)
    with watch(model, every=1) as rec:
        model.eval()
        model(X * 100)
        rec.step()  # step 0: only an eval forward ran, no gradients
        model.train()
        out = model(X)
        with torch.no_grad():
            model(X * 100)  # a no-grad training-mode forward does not count either
        model.eval()
        model(X * 100)
        model.train()
        out.square().sum().backward()
        rec.step()  # step 1
        df = rec.frame()
    step0 = df[df.step == 0]
    assert set(step0.stat) == {S.WEIGHT_NORM, S.UPDATE_NORM}  # no outputs, no grads
    assert value(df, S.ACT_MEAN, "0", 1) == pytest.approx(0.75, rel=REL)


def test_explicit_step_numbers_and_set_step_arm_the_right_forwards():
    model = linear(W)
    with watch(model, every=3, dense_until=0) as rec:
        rec.set_step(5)
        assert rec.current_step == 5 and all_hooks(model) == 0
        for global_step in range(5, 11):
            train_step(model, rec, X, lambda h: h.sum(), step=global_step)
        df = rec.frame()
    assert sorted(set(df.step)) == [6, 9]
    for s in (6, 9):
        assert set(df[df.step == s].stat) == LINEAR_STATS


def test_scheduled_step_without_armed_hooks_records_parameters_only():
    model = linear(W)
    with watch(model, every=10, dense_until=0) as rec:
        rec.set_step(1)  # next forward is step 1: not recorded, hooks off
        train_step(model, rec, X, lambda h: h.sum(), step=10)  # ...but the trainer says it was 10
        df = rec.frame()
    assert set(df.step) == {10}
    assert set(df.stat) == set(S.PARAM_STATS)


# ---------------------------------------------------------------- frames


def test_frame_schema_and_dtypes():
    model = Residual(1.0)
    with watch(model, every=1) as rec:
        for _ in range(2):
            train_step(model, rec, torch.randn(3, 4), lambda y: y.square().sum())
        df = rec.frame()
    assert list(df.columns) == ["step", "layer", "index", "kind", "stat", "value"]
    assert df["step"].dtype == np.int64
    assert df["index"].dtype == np.int32
    assert df["value"].dtype == np.float64
    for col in ("layer", "kind", "stat"):
        assert pd.api.types.is_string_dtype(df[col]), col
    assert set(df.stat) <= set(S.DEFAULT_STATS)
    assert df.step.is_monotonic_increasing
    empty = Recorder(linear(W)).start()
    e = empty.frame()
    empty.stop()
    assert list(e.columns) == list(df.columns) and len(e) == 0 and e["index"].dtype == np.int32


def test_flush_returns_only_new_rows_and_buffer_flushes_itself():
    model = linear(W)
    with watch(model, every=1, buffer_steps=2) as rec:
        for _ in range(3):
            train_step(model, rec, X, lambda h: h.sum())
        # two steps filled the buffer and were flushed automatically
        assert rec._inst.buffer.count == 1
        new = rec.flush()
        assert set(new.step) == {2}
        assert len(rec.flush()) == 0
        df = rec.frame()
    assert sorted(set(df.step)) == [0, 1, 2]
    assert len(df) == 3 * len(new)


def test_stats_subset_and_unknown_stats():
    model = Residual(1.0)
    with watch(model, every=1, stats=[S.GRAD_NORM, S.BRANCH_RATIO]) as rec:
        train_step(model, rec, torch.randn(2, 4), lambda y: y.sum())
        df = rec.frame()
    assert set(df.stat) == {S.GRAD_NORM, S.BRANCH_RATIO}
    with pytest.raises(RecorderError, match="grad_norm"):  # lists the valid names
        watch(linear(W), stats=["grad_nrom"])
    with pytest.raises(RecorderError):
        watch(linear(W), stats=[])


# ---------------------------------------------------------------- non-finite values


def two_layers():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


@pytest.mark.parametrize("what", ["activation", "grad", "weight"])
def test_first_nonfinite_value_is_reported(what):
    model = two_layers()
    x = torch.randn(5, 3)
    with watch(model, every=1) as rec:
        for step in range(4):
            inject = step >= 2
            xi = x.clone()
            if inject and what == "activation":
                xi[0, 0] = float("inf")
            if inject and what == "weight" and step == 2:
                with torch.no_grad():
                    model[1].weight[0, 0] = float("nan")
            scale = float("inf") if inject and what == "grad" else 1.0
            train_step(model, rec, xi, lambda y: (y * scale).sum())
        assert rec.nonfinite is None or rec.nonfinite["step"] >= 2  # as of the last flush
        rec.flush()
        nf = rec.nonfinite
    expected_layer = {"activation": "0", "grad": "1", "weight": "1.weight"}[what]
    assert nf == {"step": 2, "layer": expected_layer, "what": what}


def test_finite_run_reports_none():
    model = two_layers()
    with watch(model, every=1) as rec:
        train_step(model, rec, torch.randn(4, 3), lambda y: y.sum())
        rec.flush()
        assert rec.nonfinite is None


# ---------------------------------------------------------------- state


def run_steps(model, rec, opt, n, start):
    g = torch.Generator().manual_seed(123)
    xs = [torch.randn(4, 3, generator=g) for _ in range(8)]
    for i in range(start, start + n):
        train_step(model, rec, xs[i], lambda y: y.square().sum(), opt)


def test_state_dict_round_trip_resumes_exactly():
    def fresh():
        model = two_layers()
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    model, opt = fresh()
    with watch(model, every=2, dense_until=0) as rec:
        run_steps(model, rec, opt, 6, 0)
        straight = rec.frame()

    model, opt = fresh()
    rec = watch(model, every=2, dense_until=0)
    run_steps(model, rec, opt, 3, 0)
    first = rec.frame()
    buf = io.BytesIO()
    torch.save({"rec": rec.state_dict(), "model": model.state_dict(), "opt": opt.state_dict()}, buf)
    rec.stop()

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2, opt2 = fresh()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    rec2 = watch(model2, every=2, dense_until=0)
    rec2.load_state_dict(ckpt["rec"])
    assert rec2.current_step == 3
    run_steps(model2, rec2, opt2, 3, 3)
    resumed = pd.concat([first, rec2.frame()], ignore_index=True)
    rec2.stop()
    pd.testing.assert_frame_equal(resumed, straight)
    assert not resumed[(resumed.stat == S.UPDATE_NORM) & (resumed.step > 0)].value.isna().any()


def test_load_state_dict_rejects_another_model():
    rec = watch(two_layers())
    state = rec.state_dict()
    rec.stop()
    other = watch(linear(W))
    with pytest.raises(RecorderError):
        other.load_state_dict(state)
    other.stop()


# ---------------------------------------------------------------- targets


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.GroupNorm(2, 8),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 3),
    )


def test_default_targets_are_conv_fc_norm_in_registration_order():
    model = small_cnn()
    pts = default_probe_points(model)
    assert [(p.name, p.kind, p.index) for p in pts] == [
        ("0", "conv", 0),
        ("1", "bn", 1),
        ("3", "conv", 2),
        ("4", "norm", 3),  # a GroupNorm: no batch statistics, not "bn"
        ("6", "fc", 4),
    ]
    assert [p.relu_after for p in pts] == [False, True, False, False, False]


def test_parameters_owned_by_nearest_probe_point_or_minus_one():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Module()
            self.block.conv = nn.Conv2d(1, 1, 1)
            self.block.proj = nn.Conv2d(1, 1, 1)  # not a probe point: belongs to the block
            self.scale = nn.Parameter(torch.ones(1))  # nobody's

        def forward(self, x):
            return self.scale * (self.block.conv(x) + self.block.proj(x))

        def probe_points(self):
            return [ProbePoint("block.conv", 0, "conv", "block"), ProbePoint("block", 1, "block", "block")]

    t = resolve(Net())
    owners = {p.name: (p.index, p.kind) for p in t.params}
    assert owners == {
        "scale": (-1, "other"),
        "block.conv.weight": (0, "conv"),
        "block.conv.bias": (0, "conv"),
        "block.proj.weight": (1, "block"),
        "block.proj.bias": (1, "block"),
    }


def test_probe_points_naming_missing_modules_raise():
    class Bad(nn.Linear):
        def probe_points(self):
            return [ProbePoint("nope", 0, "fc")]

    with pytest.raises(RecorderError, match="nope"):
        watch(Bad(2, 2))


def test_wrapper_prefixes_are_stripped():
    assert strip_prefixes("module._orig_mod.layer1.0.conv1") == "layer1.0.conv1"
    assert strip_prefixes("_orig_mod.module.fc.weight") == "fc.weight"
    assert strip_prefixes("modules.x") == "modules.x"


# ---------------------------------------------------------------- dtypes and layouts


def cnn_frame(memory_format=torch.contiguous_format, autocast=False, steps=2):
    model = small_cnn().to(memory_format=memory_format)
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1)).to(memory_format=memory_format)
    y = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, every=1) as rec:
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = model(x)
                loss = F.cross_entropy(out.float(), y)
            opt.zero_grad()
            loss.backward()
            rec.step()
            opt.step()
        return rec.frame()


def test_channels_last_gives_the_same_statistics():
    a = cnn_frame()
    b = cnn_frame(torch.channels_last)
    assert len(a) == len(b)
    m = a.merge(b, on=["step", "layer", "stat"], suffixes=("_a", "_b"))
    assert len(m) == len(a)
    both_nan = m.value_a.isna() & m.value_b.isna()
    close = np.isclose(m.value_a, m.value_b, rtol=1e-4, atol=1e-6)
    assert (close | both_nan).all(), m[~(close | both_nan)]


def test_bf16_autocast_runs_with_float32_statistics():
    df = cnn_frame(autocast=True)
    acts = df[df.stat.isin(S.OUTPUT_STATS)]
    assert set(acts.layer) == {"0", "1", "3", "4", "6"}
    assert np.isfinite(acts.value).all()
    conv = value(df, S.ACT_ZERO_FRAC, "1", 0)  # bn before ReLU: about half non-positive
    assert 0.2 < conv < 0.8


# ---------------------------------------------------------------- histograms


def test_gradient_histograms():
    model = two_layers()
    with watch(model, every=1, histograms=True, hist_every=2) as rec:
        for _ in range(3):
            train_step(model, rec, torch.randn(4, 3), lambda y: y.square().sum())
        h = rec.histograms()
    assert list(h.columns) == ["step", "layer", "index", "kind", "bin", "lower", "upper", "count"]
    assert sorted(set(h.step)) == [0, 2]
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    totals = h.groupby(["step", "layer"])["count"].sum()
    for (step, layer), total in totals.items():
        assert total == sizes[layer]
    assert (h.upper > h.lower).all()
    off = watch(two_layers())
    assert len(off.histograms()) == 0  # off by default
    off.stop()


# ---------------------------------------------------------------- threads and warnings


def test_cpu_threads_limits_hook_reductions_and_restores_the_setting(monkeypatch):
    from gradlab.recorder import fused_tensors
    from gradlab.recorder import in_hook as recorder_module  # where gradient norms are taken in the hooks

    seen = []
    original, original_fused = recorder_module.norm, fused_tensors.in_hook

    def spy(h, dim=None):
        seen.append(torch.get_num_threads())
        return original(h, dim)

    def spy_fused(t, into):  # (on a CPU with the fused kernels, which take PyTorch's thread setting)
        seen.append(torch.get_num_threads())
        return original_fused(t, into)

    monkeypatch.setattr(recorder_module, "norm", spy)
    monkeypatch.setattr(fused_tensors, "in_hook", spy_fused)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = linear(W)
        with watch(model, every=1, cpu_threads=1, reduce_at="hooks") as rec:
            train_step(model, rec, X, lambda h: h.square().sum())
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        seen.clear()
        with watch(model, every=1, reduce_at="hooks") as rec:  # default: PyTorch's setting
            train_step(model, rec, X, lambda h: h.square().sum())
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(before)


def test_warns_when_armed_hooks_never_fire():
    class Bypass(nn.Sequential):
        def forward(self, x):
            return F.linear(x, self[0].weight)  # skips the Linear module's __call__

    model = Bypass(nn.Linear(3, 2, bias=False))
    with watch(model, every=1) as rec:
        with pytest.warns(RuntimeWarning, match="no probe point"):
            train_step(model, rec, X, lambda h: h.sum())
        train_step(model, rec, X, lambda h: h.sum())  # warns once
        df = rec.frame()
    assert set(df.stat) == set(S.PARAM_STATS)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_large_activations_match_float64_references(memory_format):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()).to(memory_format=memory_format)
    x = torch.randn(4, 3, 48, 48).to(memory_format=memory_format)  # conv output: 147,456 values
    outs = []
    handle = model[0].register_forward_hook(lambda m, a, o: outs.append(o.detach().double().clone()))
    with watch(model, every=1) as rec:
        y = model(x)
        y.retain_grad()
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum()
        loss.backward()
        rec.step()
        df = rec.frame()
    handle.remove()
    h = outs[0]
    g = torch.autograd.grad((model(x) * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), [model[0].weight])[0]
    assert value(df, S.ACT_MEAN, "0") == pytest.approx(float(h.mean()), rel=1e-5, abs=1e-7)
    assert value(df, S.ACT_STD, "0") == pytest.approx(float(h.std(correction=0)), rel=1e-5)
    assert value(df, S.ACT_ZERO_FRAC, "0") == pytest.approx(float((h <= 0).double().mean()), abs=1e-12)
    assert value(df, S.GRAD_NORM, "0.weight") == pytest.approx(float(g.norm()), rel=1e-5)
    dh = torch.linspace(-1, 1, y.numel()).view_as(y).double() * (h > 0)  # dL/dy through the ReLU
    assert value(df, S.ACT_GRAD_NORM, "0") == pytest.approx(float(dh.norm()), rel=1e-5)


def test_zero_fraction_asked_for_without_a_relu_warns_and_records_nothing():
    model = linear(W)
    with pytest.warns(RuntimeWarning, match="act_zero_frac was asked for"):
        rec = watch(model, every=1, stats=[S.ACT_ZERO_FRAC])
    with rec:
        train_step(model, rec, X, lambda h: h.sum())
        df = rec.frame()
    assert df.empty and list(df.columns) == FRAME_COLUMNS
