"""The fused CPU kernels (gradlab.recorder.native, fused_params): the same parameter
statistics as the PyTorch path and as plain PyTorch, a per-step fallback that keeps
update_norm right, checkpoints, and the kernels' status where it is shown."""

import copy
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab.bench.overhead import format_result, run_overhead
from gradlab.recorder import native
from gradlab.recorder.fused_params import FusedParamNorms
from tests.recorder_frames import assert_same

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)")
PARAM_STATS = ("grad_norm", "weight_norm", "update_norm")


pytestmark = pytest.mark.usefixtures("fresh_native")  # (tests/conftest.py)


@pytest.fixture
def fused_calls(monkeypatch):
    """What each FusedParamNorms.write returned (True: the fused path wrote the step)."""
    calls, write = [], FusedParamNorms.write
    monkeypatch.setattr(FusedParamNorms, "write", lambda self, *a: calls.append(write(self, *a)) or calls[-1])
    return calls


def cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def mlp():  # two 8x8 layers: a shape group of two
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 5))


class Branchy(nn.Module):
    """``b`` is used on even calls only: on odd steps its gradient is None."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.calls = nn.Linear(6, 5), nn.Linear(6, 5), 0

    def forward(self, x):
        out = self.a(x) + (self.b(x) if self.calls % 2 == 0 else 0)
        self.calls += 1
        return out


def data(model, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (4, 3, 8, 8) if isinstance(model[0], nn.Conv2d) else (4, 6)
    dtype = next(model.parameters()).dtype
    return [(torch.randn(shape, generator=g, dtype=dtype), torch.randint(0, 5, (4,), generator=g)) for _ in range(steps)]


def record(model, batches, rec=None):
    """SGD-momentum steps recorded every step; each record's weights and gradients by name."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = rec or gradlab.watch(model, every=1, dense_until=0)
    snaps = []
    with rec:
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            rec.step()
            snaps.append({n: (p.detach().clone(), None if p.grad is None else p.grad.clone())
                          for n, p in model.named_parameters()})  # fmt: skip
            opt.step()
    return rec, snaps


def values(rec):
    df = rec.frame()
    df = df[df["stat"].isin(PARAM_STATS)]
    return {(int(s), l, st): v for s, l, st, v in zip(df["step"], df["layer"], df["stat"], df["value"])}


def check_by_hand(got, snaps, first_step=0, prev=None):
    """grad_norm, weight_norm and update_norm (against the previous record) of every step."""
    for k, snap in enumerate(snaps):
        step = first_step + k
        for name, (w, grad) in snap.items():
            if grad is None:
                assert np.isnan(got.get((step, name, "grad_norm"), np.nan))
            else:
                assert got[step, name, "grad_norm"] == pytest.approx(grad.norm().item(), rel=1e-5)
            assert got[step, name, "weight_norm"] == pytest.approx(w.norm().item(), rel=1e-5)
            before = prev[name] if k == 0 and prev is not None else snaps[k - 1][name][0] if k else None
            if before is None:
                assert np.isnan(got[step, name, "update_norm"])
            else:
                change = (w - before).norm().item()
                assert change > 0 or name.startswith("b.")
                assert got[step, name, "update_norm"] == pytest.approx(change, rel=1e-5, abs=1e-7)


@needs_cc
@pytest.mark.parametrize("make", [cnn, mlp])
def test_fused_and_pytorch_paths_record_the_same_frame(make, monkeypatch):
    torch.manual_seed(0)
    model = make()
    frames = {}
    for native_on in ("1", "0"):
        monkeypatch.setenv("GRADLAB_NATIVE", native_on)
        native.reset()
        m = copy.deepcopy(model)
        rec, _ = record(m, data(m, 4))
        fused = rec._inst.params._fused
        assert isinstance(fused, FusedParamNorms) if native_on == "1" else fused is False
        assert (native.library() is not None) == (native_on == "1")
        frames[native_on] = rec.frame()
    assert set(PARAM_STATS) <= set(frames["1"]["stat"])
    assert frames["1"].query("stat == 'update_norm'")["value"].notna().sum() > 0
    assert_same(frames["0"], frames["1"], rtol=1e-5, atol=1e-7)


@needs_cc
def test_fused_values_are_plain_pytorch_norms(fused_calls):
    torch.manual_seed(1)
    model = mlp()
    rec, snaps = record(model, data(model, 4))
    assert fused_calls == [True] * 4
    check_by_hand(values(rec), snaps)


@needs_cc
@pytest.mark.parametrize("threads", [2, 3])
def test_parameters_split_among_threads_give_the_same_norms(fused_calls, threads):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 5))  # 68k
    rec = gradlab.watch(model, every=1, dense_until=0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # (the kernel's split follows PyTorch's threads, read when it is made)
    try:
        rec, snaps = record(model, data(model, 3), rec)
    finally:
        torch.set_num_threads(before)
    fused = rec._inst.params._fused
    assert fused_calls == [True] * 3 and fused.threads == (threads if native.library().openmp() else 1)
    check_by_hand(values(rec), snaps)


@needs_cc
def test_a_missing_gradient_falls_back_for_that_step_and_update_norm_stays_right(fused_calls):
    torch.manual_seed(2)
    model = Branchy()
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(4, 6, generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(6)]
    rec, snaps = record(model, batches)
    assert fused_calls == [True, False] * 3  # fused, torch (b.grad is None), fused after torch, ...
    assert [snap["b.weight"][1] is None for snap in snaps] == [False, True] * 3
    check_by_hand(values(rec), snaps)


def test_float64_model_is_declined_and_recorded_right(fused_calls):
    torch.manual_seed(3)
    model = mlp().double()
    rec, snaps = record(model, data(model, 3))
    assert fused_calls == []  # float32 only: no fused path is made (and no copy of the weights kept for it)
    assert rec._inst.params._fused is False
    check_by_hand(values(rec), snaps)


@needs_cc
def test_checkpoint_after_fused_steps_gives_update_norm_since_the_saved_record(fused_calls):
    torch.manual_seed(4)
    model = mlp()
    batches = data(model, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with gradlab.watch(model, every=1, dense_until=0) as rec:
        for x, y in batches[:3]:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            rec.step()
            state = rec.state_dict()
            saved = {n: p.detach().clone() for n, p in model.named_parameters()}
            opt.step()
    assert fused_calls == [True] * 3
    resumed = copy.deepcopy(model)
    rec2 = gradlab.watch(resumed, every=1, dense_until=0)  # (started)
    rec2.load_state_dict(state)
    rec2, snaps = record(resumed, batches[3:], rec=rec2)
    assert fused_calls == [True] * 4
    got = values(rec2)
    assert {k[0] for k in got} == {3}
    check_by_hand(got, snaps, first_step=3, prev=saved)


def test_gradlab_native_0_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv("GRADLAB_NATIVE", "0")
    assert native.library() is None
    assert native.status() == "fused CPU kernels: off (GRADLAB_NATIVE=0)"


@needs_cc
def test_defaults_turn_the_kernels_on_and_compile_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native.library() is not None
    assert native.status().startswith("fused CPU kernels: on")
    assert "off" not in native.status() and "GRADLAB_NATIVE" not in native.status()
    (built,) = (tmp_path / "gradlab" / "native").glob("fused_norms-*.so")
    assert built.read_bytes()[:4] == b"\x7fELF"


@needs_cc
def test_cc_may_carry_a_launcher_or_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", f"{shutil.which('cc')} -O1")  # as in CC="ccache gcc" or "gcc -O2"
    assert native.library() is not None
    assert native.status().startswith("fused CPU kernels: on")


@needs_cc
def test_a_compiler_without_openmp_builds_single_threaded_kernels(monkeypatch, tmp_path):
    cc = tmp_path / "cc-without-openmp"
    cc.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec {shutil.which("cc")} "$@"\n')
    cc.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(cc))
    lib = native.library()
    assert lib is not None and lib.openmp() == 0
    assert native.status() == "fused CPU kernels: on (one thread: built without OpenMP)"
    torch.manual_seed(1)
    model = mlp()
    rec, snaps = record(model, data(model, 2))
    assert rec._inst.params._fused.threads == 1
    check_by_hand(values(rec), snaps)


@needs_cc
def test_with_openmp_the_status_says_just_on(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if not native._openmp_loaded():
        pytest.skip("PyTorch's OpenMP (libgomp) is not loaded here")
    assert native.library().openmp() == 1
    assert native.status() == "fused CPU kernels: on"


def test_no_compiler_named_by_cc(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert native.library() is None
    assert native.status() == "fused CPU kernels: off (no C compiler found: install one (cc), or set $CC)"
    assert not (tmp_path / "gradlab").exists()


@pytest.mark.skipif(not shutil.which("false"), reason="no /bin/false")
def test_a_failing_compiler_is_named_and_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false"))
    assert native.library() is None
    status = native.status()
    assert status.startswith("fused CPU kernels: off (false failed") and "no C compiler" not in status
    assert list((tmp_path / "gradlab" / "native").iterdir()) == []  # the temporary .so removed


@needs_cc
def test_a_corrupt_cached_library_is_rebuilt(monkeypatch, tmp_path):
    # the file name from a first cache; the garbage goes into a second one, never loaded
    # before (the dynamic loader would hand back a library it already has by its path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "first"))
    assert native.library() is not None
    (first,) = (tmp_path / "first" / "gradlab" / "native").glob("*.so")
    corrupt = tmp_path / "second" / "gradlab" / "native" / first.name
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a shared library\n" * 10)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "second"))
    native.reset()
    assert native.library() is not None
    assert native.status().startswith("fused CPU kernels: on")
    assert corrupt.read_bytes() == first.read_bytes()
    assert [p.name for p in corrupt.parent.iterdir()] == [first.name]


@pytest.mark.slow
@pytest.mark.parametrize("native_on", ["1", "0"])
def test_bench_overhead_on_a_cpu_names_the_kernels_status(native_on, monkeypatch):
    if native_on == "1" and shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    monkeypatch.setenv("GRADLAB_NATIVE", native_on)
    result = run_overhead("resnet20@2", steps=1, repeats=1, warmup=0, with_wandb=False, device="cpu")
    text = format_result(result)
    gradlab_line = next(line for line in text.splitlines() if line.startswith("gradlab: "))
    if native_on == "1":
        assert "fused CPU kernels: on" in gradlab_line and "fused CPU kernels: off" not in text
    else:
        assert "fused CPU kernels: off (GRADLAB_NATIVE=0);" in gradlab_line and "kernels: on" not in text
