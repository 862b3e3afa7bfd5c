"""What the Lightning callback costs: the same training step in a Lightning ``Trainer``, bare
and with gradlab.integrations.lightning.GradlabCallback recording every step.

Two copies of the benchmark's model train in Lightning ``fit``s of ``warmup + steps``
optimizer steps each (one synthetic batch, repeated), alternating which goes first from
round to round. A callback takes each step's wall time from batch start to batch end, which
covers Lightning's own work around the step (the loop, hooks, the optimizer closure), so
the ratio is the callback's cost over a bare Lightning step, comparable with the plain
recorder's over a bare PyTorch step (gradlab.bench.overhead).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from gradlab.bench.timing import Timings, round_order, round_ratios, summarize, synchronize

__all__ = ["VARIANTS", "run_lightning_overhead"]

VARIANTS = ("lightning", "lightning+gradlab")


def run_lightning_overhead(nets: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor, steps: int,
                           repeats: int, warmup: int, every: int, device: torch.device,
                           progress: Callable[[str, int, int], None] | None = None) -> dict:  # fmt: skip
    """Step times of ``nets["lightning"]`` and ``nets["lightning+gradlab"]`` (copies of one
    model) in Lightning fits on batch ``(x, y)``: per-variant summaries and the round-by-round
    ratios of the recorded variant over the bare one."""
    import lightning.pytorch as pl

    from gradlab.integrations.lightning import GradlabCallback

    class Module(pl.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    class StepTimes(pl.Callback):
        def __init__(self):
            self.times: list[float] = []
            self.start = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            synchronize(device)
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            synchronize(device)
            self.times.append(time.perf_counter() - self.start)

    class SameBatch(torch.utils.data.Dataset):
        def __len__(self):
            return warmup + steps

        def __getitem__(self, i):
            return x, y

    modules = {name: Module(nets[name]) for name in VARIANTS}
    loader = torch.utils.data.DataLoader(SameBatch(), batch_size=None)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    timings = Timings({name: [] for name in VARIANTS})
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-lightning-") as tmp:
        for r in range(repeats):
            for done, name in enumerate(round_order(list(VARIANTS), r), start=1):
                timer = StepTimes()
                callbacks = [timer]
                if name == "lightning+gradlab":
                    callbacks.append(GradlabCallback(Path(tmp) / "run", every=every, dense_until=0, overwrite=True))
                trainer = pl.Trainer(max_steps=warmup + steps, accelerator=accelerator, devices=1, logger=False,
                                     enable_checkpointing=False, enable_progress_bar=False,
                                     enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp)  # fmt: skip
                trainer.fit(modules[name], loader)
                timings.steps[name].extend(timer.times[warmup:])
                if progress is not None:
                    progress(name, r * len(VARIANTS) + done, repeats * len(VARIANTS))
    return {
        "variants": {name: summarize(timings.steps[name]) for name in VARIANTS},
        "round_ratios": round_ratios(timings, "lightning+gradlab", "lightning", steps),
        "settings": "Lightning Trainer.fit, one process, automatic optimization; GradlabCallback(every="
                    f"{every}, dense_until=0) writing a run directory; a fit of {warmup} warm-up + {steps} timed "
                    "steps per variant per round, alternating which goes first",
    }
