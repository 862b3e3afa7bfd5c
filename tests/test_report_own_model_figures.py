"""Figures of runs of someone's own model (#29 item 5): one layer numbering for ∂W, ∂h and
activations, layer names and integer ticks on layer axes, activation lines by kind, exact
zero and non-finite apart in the heatmap, final error by run (no invented depth) with a
legend, labels that fit, and titles and captions worded for the runs drawn."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradlab
from gradlab import runs as R
from gradlab.bench import synthetic_runs as SR
from gradlab.report import build_report
from gradlab.report import collect as C
from gradlab.report import layer_frames as L
from gradlab.report.figure_jobs import flow_caption
from gradlab.report.figures_curves import finals_figure
from gradlab.report.figures_flow import activation_figure, flow_figure, heatmap_cells, heatmap_figure, layer_names
from gradlab.report.layer_numbering import own_model_map
from gradlab.report.line_groups import line_groups
from gradlab.report.style import depth_palette, get_style, layer_axis, new_figure, short_layer_name, theme

pytestmark = pytest.mark.filterwarnings("ignore:gradlab.*did not run as a module:RuntimeWarning")
PAPER = get_style("paper")


class Tiny(nn.Module):
    """Linear in, two pre-norm residual MLP blocks (LayerNorm, Linear), a zero-initialised head."""

    def __init__(self, width=8):
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width)) for _ in range(2))
        self.head = nn.Linear(width, 3)
        nn.init.zeros_(self.head.weight)  # exact zeros in ∂W of the blocks at step 0

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory):
    """Two runs of one model (one "depth"), named apart, with final errors logged."""
    root = tmp_path_factory.mktemp("runs") / "mine"
    for i, name in enumerate(("narrow", "wide")):
        torch.manual_seed(i)
        model = Tiny()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with gradlab.watch(model, every=1, run_dir=root / name) as rec:
            for step in range(4):
                x = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
                loss = F.cross_entropy(model(x), (x[:, 0] > 0).long())
                opt.zero_grad()
                loss.backward()
                rec.step(step)
                opt.step()
            rec.log(4, train_err=0.2 + 0.1 * i, test_err=0.3 + 0.1 * i)
    return [R.read_run(root / n) for n in ("narrow", "wide")]


@pytest.fixture(scope="module")
def frames(own_runs):
    data = L.load_layer_data(own_runs)
    flow = L.gradient_flow(own_runs, data)
    acts = L.activations(own_runs, data)
    return {"data": data, "flow": flow, "flow_models": L.flow_by_model(flow), "acts_models": L.flow_by_model(acts),
            "heatmaps": L.model_heatmaps(own_runs, data)}


def labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]


# --------------------------------------------------------------------------- numbering


def test_a_layers_weight_and_output_share_one_number():
    points = [(1, "embed", "fc", "main"), (2, "b.0.norm", "norm", "main"), (4, "b.0.out", "fc", "main")]
    params = [{"name": "pos", "index": 0, "shape": [8, 4]}, {"name": "embed.weight", "index": 1, "shape": [4, 4]},
              {"name": "embed.bias", "index": 1, "shape": [4]}, {"name": "b.0.norm.weight", "index": 2, "shape": [4]},
              {"name": "b.0.attn.in_proj_weight", "index": 3, "shape": [12, 4]},
              {"name": "b.0.out.weight", "index": 4, "shape": [4, 4]}]  # fmt: skip
    m = own_model_map(points, params)
    assert m.weight_pos == {"pos": 1, "embed.weight": 2, "b.0.attn.in_proj_weight": 4, "b.0.out.weight": 5}
    assert m.conv_point_pos == {"embed": 2, "b.0.out": 5}
    assert m.act_pos == {"embed": 2, "b.0.norm": 3, "b.0.out": 5}
    assert m.point_kinds["b.0.norm"] == "norm"


def test_own_runs_number_weight_and_output_of_a_layer_alike(frames):
    flow = frames["flow"]
    first = flow[flow["run"] == "narrow"]
    w = first[first["stat"] == "grad_norm"].drop_duplicates("layer").set_index("position")["layer"]
    h = first[first["stat"] == "act_grad_norm"].drop_duplicates("layer").set_index("position")["layer"]
    assert len(h) and all(w[p] == f"{layer}.weight" for p, layer in h.items())
    assert w.iloc[0] == "embed.weight" and h.iloc[0] == "embed"


# --------------------------------------------------------------------------- axes


def test_short_layer_names():
    assert short_layer_name("encoder.layers.0.self_attn.in_proj_weight") == "0.in_proj"
    assert short_layer_name("layer2.1.conv1.weight") == "layer2.1.conv1"
    assert short_layer_name("head") == "head" and short_layer_name("blocks.0.1.weight") == "blocks.0.1"
    assert len(short_layer_name("a.very_long_module_name_indeed_here")) <= 16


def test_layer_axes_have_integer_ticks_and_names_every_nth_where_they_do_not_fit():
    ax = new_figure(3, 2).subplots()
    ax.plot([1, 2, 3, 4], [1, 2, 3, 4])
    layer_axis(ax.xaxis, [1, 2, 3, 4], None, 3.0, 7)
    ax.set_xlim(0.5, 4.5)
    assert all(float(t).is_integer() for t in ax.get_xticks() if 0.5 <= t <= 4.5)
    names = {p: f"l{p}" for p in range(1, 101)}
    layer_axis(ax.xaxis, range(1, 101), names, 2.0, 7)  # 100 names in 2 inches: every n-th
    ticks = list(ax.get_xticks())
    assert 1 < len(ticks) < 100 and ticks[0] == 1 and all(float(t).is_integer() for t in ticks)
    assert labels(ax.xaxis) == [f"l{int(t)}" for t in ticks]


def test_flow_figure_names_the_layers_on_one_numbering(frames):
    fm = frames["flow_models"]
    with theme(PAPER):
        fig = flow_figure(fm, "end", "step 3", depth_palette(fm["depth"]), {}, PAPER)
    axes = np.asarray(fig.axes).reshape(2, -1)
    for ax in axes[-1]:
        ticks = ax.get_xticks()
        assert all(float(t).is_integer() for t in ticks)
        assert "embed" in labels(ax.xaxis)  # names, not numbers
        assert not any(lab.replace(".", "").isdigit() for lab in labels(ax.xaxis))
    assert list(axes[0, 0].get_xticks()) == list(axes[1, 0].get_xticks())  # ∂W and ∂h: one axis
    assert "at the end of training" in fig._suptitle.get_text()


def test_activation_lines_by_kind_and_labels_that_fit(frames):
    am = frames["acts_models"]
    with theme(PAPER):
        fig = activation_figure(am, depth_palette(am["depth"]), {}, PAPER)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["blocks.*.0 (norm)", "blocks.*.1 (linear)", "layers met once"]
    lines = fig.axes[0].get_lines()  # one run: a line per repeated layer, each in a style of its own
    assert len(lines) == 3 and len({line.get_linestyle() for line in lines}) == 3
    ylabels = [a.get_ylabel() for a in fig.axes if a.get_ylabel()]
    assert "output std,\nearly" in ylabels and not any(y.endswith(" in") for y in ylabels)
    _assert_inside(fig)


def _assert_inside(fig):
    """Every axes with its drawn tick labels, titles and legend, the figure's legends and
    title lie inside the figure (nothing cut at its edges)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out
    renderer = canvas.get_renderer()
    box = fig.bbox
    parts = [ax for ax in fig.axes if ax.get_visible()] + list(fig.legends)
    parts += [fig._suptitle] if fig._suptitle is not None else []
    for part in parts:
        e = part.get_tightbbox(renderer) if hasattr(part, "get_tightbbox") else part.get_window_extent(renderer)
        assert e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y0 >= box.y0 - 1 and e.y1 <= box.y1 + 1, part


def test_lines_by_repeated_layer_by_kind_or_one():
    names = ["embed"] + [f"enc.layers.{i}.{n}" for i in range(3) for n in ("norm1", "linear1", "linear2")] + ["head"]
    kinds = ["fc"] + ["norm", "fc", "fc"] * 3 + ["fc"]
    frame = pd.DataFrame({"family": "m", "depth": 9, "stat": "end", "position": range(1, 12), "layer": names,
                          "kind": kinds, "value": 1.0})
    lined, looks = line_groups(frame)
    assert [text for text, _ in looks.values()] == ["linear1 (linear)", "linear2 (linear)", "norm1 (norm)",
                                                    "layers met once"]
    assert list(lined["line"])[:2] == ["once", "enc.layers.*.norm1"]
    many = frame.assign(layer=[f"l{i}" for i in range(11)])  # nothing repeats: by kind
    assert [text for text, _ in line_groups(many)[1].values()] == ["linear outputs", "norm outputs"]
    blocks = frame.assign(kind="block")  # zoo nets' block outputs: one line
    assert line_groups(blocks)[1] == {} and set(line_groups(blocks)[0]["line"]) == {""}


# --------------------------------------------------------------------------- heatmap


def test_heatmap_colours_exact_zero_and_non_finite_apart(frames):
    assert list(heatmap_cells(np.array([0.0, np.nan, np.inf, 5.0, 1e-9]), 1e-3, 1.0)) == pytest.approx(
        [1e-4, np.nan, np.nan, 1.0, 1e-3], nan_ok=True)
    (key, m), = [(k, v) for k, v in frames["heatmaps"].items() if k[0] == "narrow"]
    m = m.copy()
    m.iloc[0, 0], m.iloc[1, 1] = 0.0, np.nan
    with theme(PAPER):
        fig = heatmap_figure([({"family": key[0], "depth": key[1]}, m)], PAPER, (1e-4, 1.0))
    image = fig.axes[0].images[0]
    cmap = image.get_cmap()
    assert tuple(cmap.get_bad()) != tuple(cmap.get_under())
    assert image.norm(image.get_array()[0, 0]) < 0  # exact 0: the colour map's "under" colour
    assert np.ma.is_masked(image.get_array()[1, 1]) or np.isnan(image.get_array()[1, 1])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["exactly 0", "non-finite (NaN, inf)"]
    ylabels = labels(fig.axes[0].yaxis)
    assert "embed" in ylabels and all(not lab.replace(".", "").isdigit() for lab in ylabels)


def test_pooled_seeds_keep_zero_apart_from_non_finite():
    part = pd.DataFrame({"position": [1, 2, 3], "step": [0, 0, 0], "value": [0.0, np.inf, 2.0]})
    other = part.assign(value=[1.0, 1.0, 8.0])
    frame = L.pool_seeds([part, other])
    assert frame.loc[1, 0] == 0 and np.isnan(frame.loc[2, 0]) and frame.loc[3, 0] == pytest.approx(4.0)


# --------------------------------------------------------------------------- final error


def test_final_error_draws_own_runs_by_run_with_a_legend(own_runs):
    models = C.by_model(C.finals(own_runs), C.run_table(own_runs))
    assert models["depth"].nunique() == 1  # two runs at one "depth"
    with theme(PAPER):
        fig = finals_figure(models, depth_palette(models["depth"]), PAPER, {}, {"narrow", "wide"})
    train, test = fig.axes
    assert [t.get_text() for t in test.get_legend().get_texts()] == ["narrow", "wide"]
    looks = {(h.get_marker(), h.get_color()) for h in test.get_legend().legend_handles}
    assert len(looks) == 2  # a marker and colour per run
    assert labels(train.xaxis) == ["narrow", "wide"] and train.get_xlabel() == "run"
    assert "depth" not in train.get_xlabel() + test.get_xlabel()


def test_zoo_final_error_keeps_its_depth_axis_and_legend(tmp_path):
    runs = [R.read_run(SR.make_run(tmp_path, family, 20, layers=False)) for family in ("plain", "resnet")]
    models = C.by_model(C.finals(runs), C.run_table(runs))
    with theme(PAPER):
        fig = finals_figure(models, depth_palette(models["depth"]), PAPER, {}, set())
    assert fig.axes[0].get_xlabel() == "depth (layers)"
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["plain", "ResNet"]


# --------------------------------------------------------------------------- words


def test_own_report_headings_and_captions(own_runs, tmp_path):
    result = build_report([r.path for r in own_runs], tmp_path / "rep", formats="png", workers=1)
    md = result.report.read_text(encoding="utf-8")
    assert md.startswith("# Training report: mine")
    for paper_words in ("Degradation report", "Fig. 6 style", "Table 6 style", "Final error vs depth"):
        assert paper_words not in md
    assert "## Table: final errors" in md and "### Final error by run" in md
    assert "| narrow | – | " in md and "| wide | – | " in md  # no invented depth in the table either
    assert "one colour and marker per run (legend), not placed along depth" in md
    assert "white: exactly 0 (in some seed); red: non-finite, NaN or inf (in some seed)" in md
    assert "grey" not in md
    assert "one number per layer for its weight and its output" in md
    assert "Outputs of different kinds of layer (norm, linear, ...) are lines of their own; where the model " \
           "repeats a block, each layer of the block (linear1, norm1, ...) is a line" in md


def test_zoo_report_keeps_the_papers_names(tmp_path):
    for family, depth in (("plain", 20), ("resnet", 20), ("plain", 56)):
        SR.make_run(tmp_path / "runs", family, depth)
    result = build_report([tmp_path / "runs"], tmp_path / "rep", formats="png", workers=1)
    md = result.report.read_text(encoding="utf-8")
    assert md.startswith("# Degradation report")
    assert "### Training curves (Fig. 6 style)" in md and "## Table (Table 6 style)" in md
    assert "### Final error vs depth" in md and "Open circles, dashed: plain; filled squares, solid: ResNet" in md
    assert "not placed along depth" not in md and "Outputs of different kinds" not in md
    assert "one number per layer" not in md


def test_flow_caption_names_both_kinds_of_run_when_mixed():
    assert "one number per layer" not in flow_caption(True, False)
    mixed = flow_caption(True, True)
    assert "one number per layer" in mixed and "Zoo nets: main-path conv/fc weights" in mixed


class TiedLM(nn.Module):
    """An embedding and a classifier that share one matrix (tie=True), a Linear between."""

    def __init__(self, tie: bool):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.mix = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.mix(self.embed(tokens)))


@pytest.mark.parametrize("tie", [True, False])
def test_a_tied_matrix_is_drawn_under_both_names(tmp_path, tie):
    model = TiedLM(tie)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the tied matrix is said at watch(): tests/test_watch_misuse.py)
        with gradlab.watch(model, every=1, run_dir=tmp_path / "lm") as rec:
            for step in range(2):
                tokens = torch.randint(0, 10, (4, 3), generator=torch.Generator().manual_seed(step))
                F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
                rec.step()
                model.zero_grad()
    run = R.read_run(tmp_path / "lm")
    flow = L.gradient_flow([run], L.load_layer_data([run]))
    weights = flow[flow["stat"] == "grad_norm"]
    names = set(layer_names(weights).values())
    if tie:
        assert set(weights["layer"]) == {"embed.weight = head.weight", "mix.weight"}
        assert names == {"embed = head", "mix"}
    else:
        assert set(weights["layer"]) == {"embed.weight", "mix.weight", "head.weight"}
        assert names == {"embed", "mix", "head"}
    assert short_layer_name("transformer.wte = lm_head") == "wte = lm_head"
