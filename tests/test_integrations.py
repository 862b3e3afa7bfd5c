"""The Lightning and Hugging Face callbacks, with the real libraries on CPU (tiny local models,
nothing downloaded): each fit writes a run directory whose grad_norm rows equal the gradients
a hook-free callback reads at the same optimizer steps, and `gradlab report` draws it."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradlab import runs
from gradlab import stat_names as S
from gradlab.report import build_report

RECORDED = [0, 2, 4]  # every=2, dense_until=0, 6 optimizer steps


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))


def batches(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


class Classifier(nn.Module):
    """small_net with the loss a Hugging Face Trainer reads from its output."""

    def __init__(self):
        super().__init__()
        self.net = small_net()

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class Examples(torch.utils.data.Dataset):
    """batches() as the dicts a Hugging Face Trainer feeds its model."""

    def __init__(self):
        self.x, self.y = batches()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def recorded_grad_norms(run_dir):
    layers = runs.read_run(run_dir).layers
    rows = layers[layers["stat"] == S.GRAD_NORM]
    return {(int(s), name): v for s, name, v in zip(rows["step"], rows["layer"], rows["value"])}


def assert_norms_match(recorded, reference, params):
    assert sorted({s for s, _ in recorded}) == RECORDED
    for step in RECORDED:
        for name in params:
            assert recorded[step, name] == pytest.approx(reference[step][name], rel=1e-5, abs=1e-12), (step, name)


def test_lightning_callback_records_the_gradients_the_optimizer_steps_with(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from gradlab.integrations.lightning import GradlabCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class HookFree(pl.Callback):
        def __init__(self):
            self.norms = {}

        def on_before_optimizer_step(self, trainer, module, optimizer):
            self.norms[trainer.global_step] = {n: float(p.grad.norm()) for n, p in module.named_parameters()}

    x, y = batches()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    reference = HookFree()
    run_dir = tmp_path / "lightning" / "small"
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                         default_root_dir=tmp_path, callbacks=[GradlabCallback(run_dir, every=2, dense_until=0),
                                                              reference])  # fmt: skip
    module = Module()
    trainer.fit(module, loader)
    run = runs.read_run(run_dir)
    assert run.state == runs.DONE and run.spec["source"] == runs.WATCH_SOURCE
    assert_norms_match(recorded_grad_norms(run_dir), reference.norms, [n for n, _ in module.named_parameters()])
    assert "train_loss" in run.metrics and run.metrics["train_loss"].notna().sum() >= 5
    result = build_report([run_dir], tmp_path / "report", formats="png", workers=1)
    assert {"gradient_flow_init", "scalars"} <= {p.stem for p in result.files}


def test_lightning_run_that_raises_is_marked_failed(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from gradlab.integrations.lightning import GradlabCallback

    class Broken(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def training_step(self, batch, batch_idx):
            if self.global_step == 3:
                raise ValueError("bad batch")
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = batches()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[GradlabCallback(every=1)])  # fmt: skip
    with pytest.raises(ValueError, match="bad batch"):
        trainer.fit(Broken(), loader)
    run = runs.read_run(tmp_path / "gradlab")  # the default: under the trainer's log directory
    assert run.state == runs.FAILED and "bad batch" in run.status["message"]
    assert sorted(run.layers["step"].unique()) == [0, 1, 2]


def test_lightning_callback_writes_tensorboard_events_when_asked(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gradlab.integrations.lightning import GradlabCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def training_step(self, batch, batch_idx):
            loss = F.cross_entropy(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = batches()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    callback = GradlabCallback(tmp_path / "exp" / "small", every=1, tensorboard=tmp_path / "tb")
    pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, log_every_n_steps=1, callbacks=[callback]).fit(Module(), loader)
    events = EventAccumulator(str(tmp_path / "tb" / "exp" / "small"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert "metrics/train_loss" in tags and any(t.startswith("grad_norm/") and t.endswith("net.0.weight") for t in tags)


@pytest.mark.slow
def test_transformers_callback_records_the_gradients_the_optimizer_steps_with(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from gradlab.integrations.transformers import GradlabCallback

    class HookFree(transformers.TrainerCallback):
        def __init__(self):
            self.norms = {}

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.norms[state.global_step] = {n: float(p.grad.norm()) for n, p in model.named_parameters()}

    reference = HookFree()
    model = Classifier()
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=16, max_steps=6,
                                          learning_rate=0.1, logging_steps=1, report_to=[], use_cpu=True,
                                          save_strategy="no", disable_tqdm=True, seed=0)  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Examples(),
                                   callbacks=[GradlabCallback(every=2, dense_until=0, name="hf-small"), reference])
    trainer.train()
    run_dir = tmp_path / "hf" / "gradlab"  # the default: under the Trainer's output_dir
    run = runs.read_run(run_dir)
    assert run.state == runs.DONE and run.spec["name"] == "hf-small"
    assert_norms_match(recorded_grad_norms(run_dir), reference.norms, [n for n, _ in model.named_parameters()])
    assert {"loss", "learning_rate"} <= set(run.metrics.columns) and run.metrics["step"].max() == 6
    result = build_report([run_dir], tmp_path / "report", formats="png", workers=1)
    assert "gradient_flow_init" in {p.stem for p in result.files}
