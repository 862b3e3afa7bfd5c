"""Findings live in a Lightning fit and a Hugging Face Trainer run (the real libraries, tiny
local models): a NaN put into one named layer at step 5 is warned about within one flush,
and the "stop" action ends training through the trainer's own stop flag, without an
exception, the run marked interrupted by the finding."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from gradlab import runs
from gradlab.findings import FindingWarning
from tests.test_integrations import batches, small_net

NAN_AT, BUFFER, STEPS = 5, 2, 30


def poison(net, step):
    if step == NAN_AT:
        with torch.no_grad():
            net[3].weight[0, 0] = float("nan")


def test_lightning_fit_stops_at_a_finding(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from gradlab.integrations.lightning import GradlabCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def training_step(self, batch, batch_idx):
            poison(self.net, self.global_step)
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = batches(16 * STEPS)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    callback = GradlabCallback(tmp_path / "run", every=1, buffer_steps=BUFFER, findings="stop")
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[callback])  # fmt: skip
    with pytest.warns(FindingWarning, match="nonfinite_onset"):
        trainer.fit(Module(), loader)  # no exception: the fit ends through trainer.should_stop
    status = runs.read_status(tmp_path / "run")
    assert status["state"] == runs.INTERRUPTED and "stopped by a finding: nonfinite_onset" in status["message"]
    assert NAN_AT <= trainer.global_step <= NAN_AT + BUFFER + 1 < STEPS


def test_transformers_trainer_stops_at_a_finding(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from gradlab.integrations.transformers import GradlabCallback

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_net()
            self.calls = 0

        def forward(self, x, labels=None):
            poison(self.net, self.calls)
            self.calls += 1
            logits = self.net(x)
            return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    class Examples(torch.utils.data.Dataset):
        def __init__(self):
            self.x, self.y = batches(16 * STEPS)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": self.y[i]}

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=16,
                                          max_steps=STEPS, learning_rate=0.1, logging_steps=1, report_to=[],
                                          use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0)  # fmt: skip
    callback = GradlabCallback(tmp_path / "run", every=1, buffer_steps=BUFFER, findings="stop")
    trainer = transformers.Trainer(model=Classifier(), args=args, train_dataset=Examples(), callbacks=[callback])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FindingWarning)
        trainer.train()
    assert any(issubclass(w.category, FindingWarning) and "nonfinite_onset" in str(w.message) for w in caught)
    status = runs.read_status(tmp_path / "run")
    assert status["state"] == runs.INTERRUPTED and "stopped by a finding: nonfinite_onset" in status["message"]
    assert trainer.state.global_step < STEPS
