"""Benchmarks: speed and overhead measured side by side (``gradlab bench ...``).

Speed is measured here, never asserted in tests. Shared helpers live in
gradlab.bench.timing (and gradlab.bench.workers: processes sharing one device); each
benchmark is a function returning a plain dict:

* throughput:  gradlab's training loop against the conventional PyTorch CIFAR loop
* overhead:    the recorder's cost against a bare step and wandb.watch
* concurrency: N same-architecture runs at once, as processes or as one torch.func stack
* paper:       minutes for the paper's compare here, from all its runs training at once
* report_bench: time and memory of a report at paper scale
"""
