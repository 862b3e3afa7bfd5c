"""The callbacks' runs, with the real Lightning and transformers on CPU (tiny local models,
nothing downloaded): default runs are named apart, a Lightning fit resumed from its
checkpoint continues its run with the update norms and the non-finite record, options
fail when a callback is made, and metrics rows carry the layer rows' step numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gradlab import runs
from gradlab import stat_names as S
from gradlab.errors import RecorderError
from gradlab.report.collect import identity
from gradlab.report.inputs import experiments_warning
from tests.test_integrations import Classifier, Examples, batches, small_net

pl = pytest.importorskip("lightning.pytorch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from gradlab.integrations.lightning import GradlabCallback as LightningCallback  # noqa: E402
from gradlab.integrations.transformers import GradlabCallback as HFCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = small_net()
        self.losses = {}  # global step -> the loss its batch gave

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self.net(batch[0]), batch[1])
        self.losses[self.global_step] = float(loss)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self.net(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    x, y = batches()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def trainer(root, callbacks, max_steps=6, **kw):
    kw = {"enable_checkpointing": False, "logger": True, **kw}
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, default_root_dir=root, callbacks=callbacks, **kw)  # fmt: skip


def hf_train(output_dir, callback, resume=None, **args):
    args = {"max_steps": 6, "save_strategy": "no", **args}
    args = transformers.TrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=16,
                                          learning_rate=0.1, logging_steps=1, report_to=[], use_cpu=True,
                                          disable_tqdm=True, seed=0, **args)  # fmt: skip
    trainer = transformers.Trainer(model=Classifier(), args=args, train_dataset=Examples(), callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume)


@pytest.mark.slow
def test_default_lightning_fits_and_hf_trainings_into_one_folder_are_distinct_runs(tmp_path):
    for _ in range(2):
        trainer(tmp_path, [LightningCallback(every=2)]).fit(Module(), loader())
        hf_train(tmp_path / "hf", HFCallback(every=2))
    found = runs.find_run_dirs(tmp_path)
    named = {d.relative_to(tmp_path).as_posix(): runs.read_run(d).name for d in found}
    assert named == {"lightning_logs/version_0/gradlab": "lightning_logs/version_0",
                     "lightning_logs/version_1/gradlab": "lightning_logs/version_1",
                     "hf/gradlab": "hf", "hf/gradlab-2": "hf-2"}  # fmt: skip
    labels = {identity(runs.read_run(d))["label"] for d in found}
    assert len(labels) == 4 and all(runs.read_run(d).state == runs.DONE for d in found)
    assert experiments_warning([runs.read_run(d) for d in found]) is None  # labelled apart: nothing to warn of
    experiments = {d.relative_to(tmp_path).as_posix(): runs.read_run(d).spec["experiment"] for d in found}
    assert experiments == {"lightning_logs/version_0/gradlab": "lightning_logs",  # the logger's, not "version_0"
                           "lightning_logs/version_1/gradlab": "lightning_logs", "hf/gradlab": "hf",
                           "hf/gradlab-2": "hf"}  # fmt: skip
    # what the user names stays as given
    hf_train(tmp_path / "named", HFCallback(every=2, name="bert-lr0.1"))
    trainer(tmp_path / "own", [LightningCallback(tmp_path / "own" / "fit-a", every=2)]).fit(Module(), loader())
    assert runs.read_run(tmp_path / "named" / "gradlab").name == "bert-lr0.1"
    assert runs.read_run(tmp_path / "own" / "fit-a").name == "fit-a"


class Weights(pl.Callback):
    """Each step's weights as the optimizer is about to change them; a NaN gradient put into
    ``net.3.bias`` at ``poison_step`` for the recorder to see and taken out again after it."""

    def __init__(self, poison_step=-1):
        self.weights, self.poison_step = {}, poison_step

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.weights[trainer.global_step] = {n: p.detach().clone() for n, p in module.named_parameters()}
        if trainer.global_step == self.poison_step:
            module.net[3].bias.grad[0] = float("nan")


class Cure(pl.Callback):
    def on_before_optimizer_step(self, trainer, module, optimizer):
        torch.nan_to_num_(module.net[3].bias.grad, nan=0.0)


def test_a_lightning_fit_resumed_from_its_checkpoint_continues_its_run(tmp_path):
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    first, seen = LightningCallback(every=1), Weights(poison_step=1)
    trainer(tmp_path, [seen, first, Cure(), ckpt], max_steps=4, enable_checkpointing=True).fit(Module(), loader())
    run_dir = tmp_path / "lightning_logs" / "version_0" / "gradlab"
    assert runs.read_status(run_dir)["nonfinite"] == {"step": 1, "layer": "net.3.bias", "what": "grad"}

    again, later = LightningCallback(every=1), Weights()
    path = next((tmp_path / "ckpt").glob("*step=4*.ckpt"))
    trainer(tmp_path, [later, again, Cure()], max_steps=8).fit(Module(), loader(), ckpt_path=str(path))
    assert not (tmp_path / "lightning_logs" / "version_1" / "gradlab").exists()  # the same run goes on
    run = runs.read_run(run_dir)
    assert run.state == runs.DONE and run.status["nonfinite"]["step"] == 1
    layers = run.layers
    assert sorted(layers["step"].unique()) == list(range(8))
    update = layers[(layers.stat == S.UPDATE_NORM) & (layers.step == 4)].set_index("layer")["value"]
    for name, w in later.weights[4].items():  # the first resumed record: ||w_4 - w_3||, w_3 from the first fit
        assert update[name] == pytest.approx(float((w - seen.weights[3][name]).norm()), rel=1e-5)


def test_callback_options_are_checked_when_the_callback_is_made():
    for make in (LightningCallback, HFCallback):
        with pytest.raises(RecorderError, match=r"unknown option evry; .*\bevery\b"):
            make(evry=5)
        with pytest.raises(RecorderError, match="buffer_steps must be >= 1"):
            make(buffer_steps=0)
        with pytest.raises(RecorderError, match="resume=True and overwrite=True"):
            make(resume=True, overwrite=True)
        with pytest.raises(Exception, match="nope"):
            make(stats=["nope"])
        assert make(every=5, name="x").options == {"every": 5, "name": "x"}


def test_lightning_metrics_carry_the_step_of_their_layer_rows_and_repeat_no_row(tmp_path):
    x, y = batches()
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:32], y[:32]), batch_size=16)
    module, callback = Module(), LightningCallback(tmp_path / "run", every=1)
    trainer(tmp_path, [callback], max_steps=8, val_check_interval=3, limit_val_batches=2,
            num_sanity_val_steps=0).fit(module, loader(), val)  # fmt: skip
    metrics = runs.read_run(tmp_path / "run").metrics.set_index("step")
    assert metrics.index.is_unique
    train = metrics["train_loss"].dropna()
    assert list(train.index) == list(range(8))  # one row per optimizer step, numbered as its layer rows
    assert all(train[s] == pytest.approx(module.losses[s]) for s in train.index)
    vals = metrics["val_loss"].dropna()
    assert list(vals.index) == [3, 6]  # after 3 and 6 steps: the weights of layer rows 3 and 6
    assert metrics.loc[[3, 6], "train_loss"].notna().all()  # those steps' own training rows, merged
    assert len(metrics) == 8  # the end of the fit added nothing new


def test_hf_metrics_carry_the_step_of_their_layer_rows(tmp_path):
    hf_train(tmp_path / "hf", HFCallback(tmp_path / "run", every=1), max_grad_norm=1e9)
    run = runs.read_run(tmp_path / "run")
    layers = run.layers[run.layers.stat == S.GRAD_NORM]
    total = layers.groupby("step")["value"].apply(lambda v: math.sqrt((v ** 2).sum()))
    logged = run.metrics.dropna(subset=["grad_norm"]).set_index("step")["grad_norm"]
    assert list(logged.index) == list(range(6))
    for step, value in logged.items():  # the Trainer's total norm is that of the same step's gradients
        assert total[step] == pytest.approx(value, rel=1e-4)


def test_lightning_loggers_receive_the_layer_statistics_when_asked(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tags(loggers: bool) -> set[str]:
        logger = pl.loggers.TensorBoardLogger(tmp_path, name=f"tb-{loggers}")
        callback = LightningCallback(tmp_path / f"run-{loggers}", every=1, loggers=loggers)
        trainer(tmp_path, [callback], max_steps=3, logger=logger).fit(Module(), loader())
        events = EventAccumulator(logger.log_dir)
        events.Reload()
        return set(events.Tags()["scalars"])

    asked = tags(True)
    assert "grad_norm/000.net.0.weight" in asked and "act_grad_norm/002.net.3" in asked and "train_loss" in asked
    assert not any(t.startswith("grad_norm/") for t in tags(False))


def test_an_hf_training_resumed_from_its_checkpoint_continues_its_default_run(tmp_path):
    hf_train(tmp_path / "hf", HFCallback(every=1), save_strategy="steps", save_steps=3, max_steps=3)
    hf_train(tmp_path / "hf", HFCallback(every=1), resume=str(tmp_path / "hf" / "checkpoint-3"))
    assert [d.name for d in runs.find_run_dirs(tmp_path)] == ["gradlab"]
    run = runs.read_run(tmp_path / "hf" / "gradlab")
    assert sorted(run.layers["step"].unique()) == list(range(6)) and run.state == runs.DONE
