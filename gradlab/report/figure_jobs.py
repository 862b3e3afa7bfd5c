"""The figures of a runs report with their titles and captions, worded for the runs drawn.

Runs of gradlab's trainer (the zoo: plain nets, ResNets and the remedies at matched depths)
get the paper's names ("Fig. 6 style", "Table 6 style", error against depth); runs of
someone's own loop (gradlab.watch, its callbacks) get plain ones: no depth axis invented
for them, their layers numbered and named as they ran.
"""

from __future__ import annotations

from types import SimpleNamespace

from gradlab import families as fam
from gradlab import runs as R
from gradlab.report import layer_frames as L
from gradlab.report.figures_curves import curves_figure, finals_figure, scalars_figure
from gradlab.report.figures_flow import activation_figure, flow_figure, heatmap_figure, heatmap_range
from gradlab.report.figures_response import responses_figure
from gradlab.report.render import FigureJob

__all__ = ["figure_jobs", "own_families", "paper_runs"]


def own_families(runs) -> set[str]:
    """The family keys of runs written from someone's own loop (spec.json source gradlab.watch)."""
    return {r.family_key for r in runs if r.spec.get("source") == R.WATCH_SOURCE}


def paper_runs(runs) -> bool:
    """Whether any run is one of gradlab's trainer (a zoo net), whose report keeps the paper's names."""
    return any(r.spec.get("source") != R.WATCH_SOURCE for r in runs)


def figure_jobs(f: SimpleNamespace, look, skipped: list[str], own: set[str]) -> list[FigureJob]:
    """The figures of a runs report, as jobs for render; what cannot be drawn goes to
    ``skipped``. ``own``: the family keys of runs of someone's own loop (:func:`own_families`)."""
    jobs: list[FigureJob] = []
    families = set(f.table["family"])
    zoo, mine = bool(families - own), bool(families & own)

    def job(name, title, caption, weight, make, *args):
        jobs.append(FigureJob(name, title, caption, weight, make, args))

    if not f.curves.empty:
        job("curves", "Training curves (Fig. 6 style)" if zoo else "Training curves",
            "Dashed lines: training error; bold lines: test error. "
            + ("One panel per family (plain nets, ResNets, or a run's own name). " if zoo else
               "One panel per run, titled with its name. ")
            + "With several seeds, the mean over seeds (shaded: test-error min–max).",
            1.0, curves_figure, f.curves, f.palette, f.notes, look)  # fmt: skip
    elif f.logged.empty:
        skipped.append("training curves: no run has evaluated yet")
    if not f.logged.empty:
        job("scalars", "Logged scalars",
            "What the runs of your own loop logged with rec.log, against the step: one panel per name, "
            "one line per run.",
            0.8, scalars_figure, f.logged, look)  # fmt: skip
    if f.models["train_mean"].notna().any():
        job("final_error", {(True, False): "Final error vs depth", (False, True): "Final error by run"}.get(
                (zoo, mine), "Final error vs depth, and by run"),
            finals_caption(f.table, own), 0.8, finals_figure, f.models, f.palette, look, f.notes, own)  # fmt: skip
    for phase in L.PHASES:
        if f.flow_models.empty or not (f.flow_models["phase"] == phase).any():
            continue
        job(f"gradient_flow_{phase}", f"Gradient flow, {phase} ({f.phase_labels[phase]})", flow_caption(zoo, mine),
            1.5, flow_figure, f.flow_models, phase, f.phase_labels[phase], f.palette, f.notes, look)  # fmt: skip
    if f.heatmaps:  # one panel per model, seeds pooled: a figure per seed cost minutes at 500 runs
        job("gradient_heatmap", "Gradient norm by layer and step", HEATMAP_CAPTION,
            2.0, heatmap_figure, f.heatmaps, look, heatmap_range(f.heatmaps))  # fmt: skip
    if not f.acts_models.empty:
        job("activations", "Activations along depth", activations_caption(zoo, mine),
            1.2, activation_figure, f.acts_models, f.palette, f.notes, look)  # fmt: skip
    if not f.responses.empty:
        job("layer_responses", "Layer responses (Fig. 7 style)" if zoo else "Layer responses (BN outputs)",
            "Std of each BN output (after BN, before ReLU) at the last recorded step. Top: layers in their "
            "original order; bottom: sorted by magnitude. Mean over seeds. Log y axis when the stds span "
            "more than two decades.",
            1.2, responses_figure, f.responses, f.palette, f.notes, look)  # fmt: skip
    return jobs


HEATMAP_CAPTION = (
    "‖∂L/∂W‖ of each main-path weight (y: layer, input at the bottom, named where the names fit) at each "
    "recorded step (x, in recording order; the schedule is denser early), one panel per model: the geometric "
    "mean over its seeds (those that recorded the step). One log colour scale for all panels; white: exactly 0 "
    "(in some seed); red: non-finite, NaN or inf (in some seed)."
)

OWN_NUMBERING = (
    "layers of your own model are numbered in the order they ran, one number per layer for its weight and "
    "its output, and named on the axis (every n-th name where not all fit)"
)


def flow_caption(zoo: bool, mine: bool) -> str:
    """The gradient-flow figures' caption, for zoo nets, your own model's runs, or both."""
    if not mine:
        return ("Per-layer gradient norms along depth (layer 1 = first conv, last = classifier), log scale. "
                "Top: ‖∂L/∂W‖ of each main-path conv/fc weight; bottom: ‖∂L/∂h‖ at each conv output. "
                "Geometric mean over seeds.")  # fmt: skip
    text = ("Per-layer gradient norms along depth, log scale. Top: ‖∂L/∂W‖ of each weight matrix; bottom: "
            f"‖∂L/∂h‖ at each linear or conv output; {OWN_NUMBERING}. Geometric mean over seeds.")  # fmt: skip
    if zoo:
        text += " Zoo nets: main-path conv/fc weights and conv outputs (layer 1 = first conv, last = classifier)."
    return text


def activations_caption(zoo: bool, mine: bool) -> str:
    """The activation figure's caption."""
    text = ("Std of the output of each residual block (zoo nets) or of each watched layer (other models) along "
            "depth, at initialization, early in training and at its end (rows); log scale, geometric mean over "
            "seeds. Sampled on the first examples of a batch, except at BatchNorms.")  # fmt: skip
    if mine:
        text += (" Outputs of different kinds of layer (norm, linear, ...) are lines of their own; where the model "
                 "repeats a block, each layer of the block (linear1, norm1, ...) is a line, and layers met once (an "
                 "embedding, the classifier) are markers; told apart by line style and marker (legend); "
                 f"{OWN_NUMBERING}, as in the gradient-flow figures.")
    return text


def finals_caption(table, own: set[str]) -> str:
    """How the final-error figure shows the runs, for its caption."""
    families = set(table["family"])
    zoo, mine = families - own, families & own
    parts = []
    if zoo:
        parts.append("Final training and test error against depth. " + family_marks(zoo)
                     + "; ×: a run did not finish. Errorbars: std over seeds (when several).")  # fmt: skip
    if mine:
        parts.append(("Runs of your own loop" + (" (bottom row)" if zoo else "")
                      + ": final training and test error side by side, one colour and marker per run (legend), "
                      "not placed along depth; ×: a run did not finish. Errorbars: std over seeds (when several)."))
    return " ".join(parts)


def family_marks(families: set[str]) -> str:
    """How the final-error figure tells zoo families apart."""
    if families <= {fam.PLAIN, fam.RESNET}:
        return "Open circles, dashed: plain; filled squares, solid: ResNet"
    text = "One marker and line style per family (legend), one colour per depth"
    return text + ("; a depth's markers side by side" if len(families) > 2 else "")
