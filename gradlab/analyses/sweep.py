"""Freshly initialized nets for every (family, depth, seed): what the at-init probes loop over."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from gradlab import families as fam
from gradlab.environment import resolve_device
from gradlab.config import check_seed
from gradlab.errors import ConfigError
from gradlab.models import build, model_name
from gradlab.analyses.init_inputs import ProbeBatch, probe_batch
from gradlab.progress import progress_bar

__all__ = ["Sweep", "check_seeds"]


def check_seeds(seeds) -> tuple[int, ...]:
    """Seeds as a tuple; a clear ConfigError before any work for junk (gradlab.config.check_seed)."""
    seeds = tuple(seeds)
    if not seeds:
        raise ConfigError("no seeds given; give at least one, such as 0,1,2")
    return tuple(check_seed(s) for s in seeds)


@dataclass
class Sweep:
    """The CIFAR-family nets of `families` x `depths`, one per seed, each with its batch.

    Seed s sets both the initial weights and which examples form the batch (the same batch
    for every net of that seed). Bad families, seeds or depths are errors before any work.
    """

    names: dict[tuple[str, int], str]  # (family, depth) -> model name
    seeds: tuple[int, ...]
    batches: dict[int, ProbeBatch]
    device: torch.device

    @classmethod
    def plan(cls, depths, families, seeds, batch_size: int, dataset: str, data_dir: str | None = None,
             device: str = "auto", inputs: str = "real") -> "Sweep":
        families = fam.check(families)
        seeds = check_seeds(seeds)
        names = {(f, int(d)): model_name(f, int(d)) for d in depths for f in families}  # validates depths
        dev = resolve_device(device)
        batches = {s: probe_batch(dataset, batch_size, seed=s, inputs=inputs, data_dir=data_dir, device=dev)
                   for s in seeds}  # fmt: skip
        return cls(names, seeds, batches, dev)

    def settings(self) -> dict:
        """What analysis.json records about the sweep itself."""
        return {
            "depths": sorted({d for _, d in self.names}),
            "families": list(dict.fromkeys(f for f, _ in self.names)),
            "seeds": list(self.seeds),
        }

    def models(self, desc: str, progress: bool | None = None,
               **build_options) -> Iterator[tuple[str, int, str, int, torch.nn.Module, ProbeBatch]]:
        """(family, depth, name, seed, model, batch) for every net, shallow first, with a
        progress bar (None: only on a terminal). Each model is built when its turn comes."""
        todo = [(f, d, s) for (f, d) in sorted(self.names, key=lambda k: (k[1], k[0])) for s in self.seeds]
        bar = progress_bar(len(todo), desc, "net", progress)
        try:
            for family, depth, seed in todo:
                batch = self.batches[seed]
                name = self.names[family, depth]
                torch.manual_seed(seed)
                model = build(name, num_classes=batch.num_classes, in_channels=batch.in_channels,
                              **build_options).to(self.device)  # fmt: skip
                yield family, depth, name, seed, model, batch
                del model
                if bar is not None:
                    bar.set_postfix_str(f"{name} s{seed}")
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
