"""Findings while training, in a plain PyTorch loop: a NaN put into one named layer at step s
is warned about within one flush after s, once; the "stop" action ends the run cleanly,
marked interrupted by the finding, and a rerun resumes it; a healthy loop hears nothing;
the trackers (a real TensorBoard event file) get the finding."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import gradlab
from gradlab import runs
from gradlab.errors import RecorderError
from gradlab.findings import FindingStop, FindingWarning, LiveFindings

BUFFER = 4  # steps per flush


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def loop(rec, model, steps, nan_at=None, start=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    for step in range(start, steps):
        if step == nan_at:
            with torch.no_grad():
                model[2].weight[0, 0] = float("nan")
        x = torch.randn(8, 4, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        rec.log(step, loss=loss)
        rec.step(step)
        opt.step()


def test_a_nan_put_in_at_step_9_is_warned_about_within_one_flush_once(tmp_path):
    model = net()
    with pytest.warns(FindingWarning) as caught:
        with gradlab.watch(model, run_dir=tmp_path / "r", every=1, buffer_steps=BUFFER, findings=True) as rec:
            loop(rec, model, 20, nan_at=9)
    said = [str(w.message) for w in caught if issubclass(w.category, FindingWarning)]
    onset = [s for s in said if "nonfinite_onset" in s]
    assert len(onset) == 1 and "first non-finite weight in 2.weight at step 9" in onset[0]
    assert runs.read_status(tmp_path / "r")["state"] == runs.DIVERGED


def test_the_stop_action_ends_the_run_cleanly_and_it_resumes(tmp_path):
    model = net()
    live = LiveFindings("stop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FindingWarning)
        with pytest.raises(FindingStop, match="stopped by a finding: nonfinite_onset"):
            with gradlab.watch(model, run_dir=tmp_path / "r", every=1, buffer_steps=BUFFER, findings=live) as rec:
                loop(rec, model, 40, nan_at=9)
    status = runs.read_status(tmp_path / "r")
    assert status["state"] == runs.INTERRUPTED and status["message"].startswith("stopped by a finding: nonfinite")
    stopped_at = status["step"]
    assert 9 <= stopped_at < 9 + BUFFER  # within one flush after the NaN
    assert [f.rule for f in live.findings][:1] == ["nonfinite_onset"]
    model = net()  # the user fixes the cause and resumes
    with gradlab.watch(model, run_dir=tmp_path / "r", every=1, resume=True) as rec:
        loop(rec, model, 20, start=rec.current_step)
    assert runs.read_status(tmp_path / "r")["state"] == runs.DONE


def test_a_healthy_loop_hears_nothing_and_the_action_function_is_not_called(tmp_path):
    model = net()
    called = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", FindingWarning)  # any finding would fail the test
        with gradlab.watch(model, run_dir=tmp_path / "r", every=1, buffer_steps=BUFFER, findings=called.append) as rec:
            loop(rec, model, 24)
    assert called == [] and runs.read_status(tmp_path / "r")["state"] == runs.DONE


def test_findings_go_to_tensorboard_as_text(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gradlab.tracking import TensorBoardTracker

    model = net()
    tracker = TensorBoardTracker(tmp_path / "tb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FindingWarning)
        with gradlab.watch(model, run_dir=tmp_path / "r", every=1, buffer_steps=BUFFER, findings=True,
                           callbacks=[tracker]) as rec:  # fmt: skip
            loop(rec, model, 16, nan_at=5)
    (events,) = [p for p in (tmp_path / "tb").rglob("events.out.tfevents.*")]
    acc = EventAccumulator(str(events.parent), size_guidance={"tensors": 0}).Reload()
    assert "findings/nonfinite_onset/text_summary" in acc.Tags()["tensors"]


def test_findings_need_a_run_directory_and_a_known_action():
    with pytest.raises(RecorderError, match="need.* a run_dir|from a run directory"):
        gradlab.watch(net(), findings=True)
    with pytest.raises(RecorderError, match="'warn', 'stop' or a function"):
        LiveFindings("shout")


def test_findings_are_wandb_alerts(tmp_path):
    from gradlab.tracking import WandbTracker
    from tests.wandb_records import offline_runs, read_offline_run

    model = net()
    tracker = WandbTracker("offline", project="gradlab-test", directory=tmp_path / "wb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FindingWarning)
        with gradlab.watch(model, run_dir=tmp_path / "r", every=1, buffer_steps=BUFFER, findings=True,
                           callbacks=[tracker]) as rec:  # fmt: skip
            loop(rec, model, 16, nan_at=5)
    (folder,) = offline_runs(tmp_path / "wb")
    alerts = read_offline_run(folder)["alerts"]
    assert any(a["title"] == "gradlab: nonfinite_onset in r" and a["level"] == "ERROR" for a in alerts), alerts


def test_a_budget_skips_checks_that_would_take_too_much_and_the_end_catches_up(tmp_path):
    model = net()
    live = LiveFindings(budget=1e-6)  # any check takes more than a millionth of the time since the last
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FindingWarning)
        with gradlab.watch(model, run_dir=tmp_path / "r", every=1, buffer_steps=BUFFER, findings=live) as rec:
            loop(rec, model, 20, nan_at=9)
    assert live.checks == 2  # the first flush, then the end: the four flushes between were skipped
    assert [f.rule for f in live.findings][:1] == ["nonfinite_onset"]
    assert any("nonfinite_onset" in str(w.message) for w in caught)
    with pytest.raises(RecorderError, match="budget must be"):
        LiveFindings(budget=2)
