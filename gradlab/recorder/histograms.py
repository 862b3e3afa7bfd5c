"""Coarse per-parameter gradient histograms on fixed log-spaced bins.

Bin ``k`` counts gradient entries with ``10**(LOG10_LO + k) <= |g| < 10**(LOG10_LO + k + 1)``;
the first bin also takes everything smaller (exact zeros included) and the last bin
everything larger, NaN and inf included. The bins are fixed so that histograms of
different steps, layers and runs line up without rebinning.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LOG10_LO", "LOG10_HI", "N_BINS", "bin_edges", "grad_histograms"]

LOG10_LO, LOG10_HI = -12, 2
N_BINS = LOG10_HI - LOG10_LO  # one bin per decade


def bin_edges() -> np.ndarray:
    """The N_BINS + 1 bin edges in |g| (not log10)."""
    return 10.0 ** np.arange(LOG10_LO, LOG10_HI + 1, dtype=np.float64)


def grad_histograms(grads: list[torch.Tensor | None], out: torch.Tensor) -> None:
    """Write the histogram of ``|g|`` for each gradient into the rows of ``out``
    ([len(grads), N_BINS], float32, on the gradients' device); None gradients get zeros.

    Runs on the device without a host sync: a few elementwise ops and one ``histc`` per
    gradient (only on the coarse histogram schedule).
    """
    lo, hi = float(LOG10_LO), float(LOG10_HI)
    # histc's last bin is closed on the right: values at exactly ``hi`` land in it.
    for row, g in zip(out, grads):
        if g is None:
            row.zero_()
            continue
        x = torch.log10(g.detach().abs().float())
        x = torch.nan_to_num_(x, nan=hi, posinf=hi, neginf=lo).clamp_(lo, hi)
        torch.histc(x, bins=N_BINS, min=lo, max=hi, out=row)
