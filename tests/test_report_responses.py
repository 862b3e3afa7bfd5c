"""The layer-response figure (Fig. 7 style) switches to a log y axis when one net's responses
dwarf the others', so that every curve stays readable."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from gradlab.report.figures_response import LOG_SPAN, log_scale_for, responses_figure
from gradlab.report.style import depth_palette, get_style, theme


def _responses(plain_scale: float) -> pd.DataFrame:
    rows = []
    for family, scale in (("plain", plain_scale), ("resnet", 1.0)):
        for depth in (20, 56):
            for position in range(depth // 2):
                value = scale * (1.0 + 0.5 * (position % 3))
                rows.append({"family": family, "depth": depth, "seed": 0, "position": position, "value": value})
    frame = pd.DataFrame(rows)
    frame["rank"] = frame.groupby(["family", "depth"])["value"].rank(ascending=False, method="first").astype(int) - 1
    return frame


@pytest.mark.parametrize("plain_scale, log", [(1.0, False), (5000.0, True)])
def test_axis_is_logarithmic_only_when_the_stds_span_more_than_two_decades(plain_scale, log):
    responses = _responses(plain_scale)
    assert log_scale_for(responses["value"]) is log
    style = get_style("paper")
    with theme(style):
        fig = responses_figure(responses, depth_palette([20, 56]), {}, style)
    try:
        scales = {ax.get_yscale() for ax in fig.axes}
        labels = {ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()}
        assert scales == ({"log"} if log else {"linear"})
        assert labels == ({"std (log scale)"} if log else {"std"})
        if log:  # the residual nets' curves (std 1 to 2) are inside the shared axis, not at its floor
            low, high = fig.axes[1].get_ylim()
            assert low <= 1.0 and high >= 5000.0
    finally:
        plt.close(fig)


def test_zero_and_non_finite_stds_do_not_decide_the_scale():
    assert not log_scale_for([0.0, 1.0, 2.0, float("nan"), float("inf")])
    assert log_scale_for([0.5, 0.5 * LOG_SPAN * 1.01])
    assert not log_scale_for([])
