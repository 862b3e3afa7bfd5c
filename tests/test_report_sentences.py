"""Every sentence `gradlab report` says about runs, on a case where it must appear and on one
where it must not (a false alarm is a defect too). Sentences already tested both ways
elsewhere (tests/test_report_tables.py, test_report_recipes.py, test_report_build.py, ...)
are not repeated here; most cases call the small function that makes the sentence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradlab import runs as R
from gradlab.bench import synthetic_runs as F
from gradlab.report import collect as C
from gradlab.report import summary as SUM
from gradlab.report import tables as T
from gradlab.report.build import _frames, build_report
from gradlab.report.figure_jobs import figure_jobs, own_families
from gradlab.report.inputs import find, read_runs
from gradlab.report.style import get_style
from gradlab.report.wording import trend_word
from gradlab.run_writer import RunWriter
from tests.damage import truncate_file


def row(family, depth, train, test=np.nan, n=1, std=np.nan, note=""):
    """One row of by_model, as summarize and the table read it."""
    label = {"plain": "plain", "resnet": "ResNet"}[family] + f"-{depth}"
    return {"family": family, "depth": depth, "label": label, "params": 269722, "n": n,
            "train_mean": train, "train_std": std, "train_min": train, "train_max": train,
            "test_mean": test, "test_std": std, "test_min": test, "test_max": test,
            "seeds": "0", "note": note}  # fmt: skip


def seeded(family, depth, train, test=np.nan, std=0.002, note=""):
    return row(family, depth, train, test, n=3, std=std, note=note)


def text(*rows) -> str:
    return " ".join(SUM.summarize(pd.DataFrame(list(rows))))


def own_run(root, name, log=None):
    """A run of someone's own loop (its model is its own family, as gradlab.watch writes it)."""
    writer = RunWriter(root / name, name=name, overwrite=True, flush_seconds=None)
    writer.open({"name": name, "family": name, "label": name, "depth": 3}, {"stats": []}, {"torch": "n/a"})
    if log:
        writer.log({"step": 4, **log})
    writer.close(R.DONE, 4)
    return root / name


# --- summary: the preambles -----------------------------------------------------------------

ONE_SEED = "Each model has one seed, so no noise estimate exists"


def test_one_seed_preamble_only_where_a_comparison_follows():
    assert ONE_SEED in text(row("plain", 20, 0.08), row("plain", 56, 0.12))
    # plain-20 and ResNet-56 share neither a family nor a depth: nothing is compared, so no
    # "differences are reported, not judged" (nor its advice) is said of nothing
    assert SUM.summarize(pd.DataFrame([row("plain", 20, 0.08), row("resnet", 56, 0.04)])) == []


def test_runs_of_ones_own_loop_get_no_one_seed_preamble(tmp_path):
    """Each run of one's own loop is a model of its own: none is compared with another, and
    --seeds is the trainer's flag."""
    for name, err in (("narrow", 0.2), ("wide", 0.3)):
        own_run(tmp_path, name, {"train_err": err, "test_err": err + 0.1})
    runs, _ = read_runs(R.found_run_dirs(R.scan(tmp_path, (R.SPEC,))))
    models = C.by_model(C.finals(runs), C.run_table(runs))
    assert len(models) == 2 and set(models["n"]) == {1}
    sentences = SUM.summarize(models)
    assert not any(ONE_SEED in s or "--seeds" in s for s in sentences)
    assert sentences != ["No run has evaluated yet: there are no final errors to compare."]


def test_no_evaluation_yet_is_not_said_once_a_run_has_evaluated():
    said = SUM.summarize(pd.DataFrame([row("plain", 20, 0.08, 0.1), row("plain", 56, np.nan)]))
    assert not any("No run has evaluated yet" in s for s in said)


# --- summary: depth within a family -------------------------------------------------------------


def test_residual_depth_with_one_seed_is_not_judged_a_cost_of_depth():
    said = text(row("resnet", 20, 0.06), row("resnet", 56, 0.04))
    assert "so whether this is a cost of depth is not judged" in said
    assert "degradation" not in said
    assert "cost of depth" not in text(row("plain", 20, 0.06), row("plain", 56, 0.04))


def test_deeper_resnet_within_the_noise_is_not_shown_harder():
    said = text(seeded("resnet", 20, 0.050, std=0.02), seeded("resnet", 56, 0.055, std=0.02))
    assert ("ResNet-56 and ResNet-20 end within the noise of 3 seeds (5.5% vs 5.0% training error; their 95 % "
            "intervals overlap): the deeper residual net is not shown harder to train.") in said
    assert "no degradation" not in said  # the plain nets' verdict
    beyond = text(seeded("resnet", 20, 0.05), seeded("resnet", 56, 0.03))
    assert "not shown harder to train" not in beyond and "within the noise" not in beyond


def test_deeper_resnet_worse_beyond_the_intervals_is_harder_to_train_too():
    said = text(seeded("resnet", 20, 0.05), seeded("resnet", 110, 0.09))
    assert ("ResNet-110 ends with higher training error (9.0%) than ResNet-20 (5.0%), beyond the 95 % intervals "
            "of 3 seeds: at this budget the deeper residual net is harder to train too.") in said
    assert "harder to train too" not in text(seeded("resnet", 20, 0.05), seeded("resnet", 110, 0.03))
    assert "harder to train too" not in text(seeded("plain", 20, 0.05), seeded("plain", 110, 0.09))


def test_caveat_only_for_a_model_that_did_not_finish():
    said = text(row("plain", 20, 0.08), row("plain", 56, 0.12, note="crashed @ step 150/400"))
    assert "(caveat: plain-56 crashed @ step 150/400, so it did not finish its training budget)" in said
    assert "caveat" not in text(row("plain", 20, 0.08), row("plain", 56, 0.12))


def test_test_error_is_quoted_only_where_both_models_have_one():
    assert " Test error: 14.1% vs 10.2%." in text(row("plain", 20, 0.081, 0.102), row("plain", 56, 0.123, 0.141))
    assert "Test error:" not in text(row("plain", 20, 0.081), row("plain", 56, 0.123, 0.141))


def test_training_error_by_depth_only_with_more_than_two_depths():
    three = text(row("plain", 20, 0.081), row("plain", 32, 0.1), row("plain", 56, 0.123))
    assert " Training error by depth: plain-20 8.1%, plain-32 10.0%, plain-56 12.3%." in three
    assert "Training error by depth" not in text(row("plain", 20, 0.081), row("plain", 56, 0.123))


def test_residual_against_plain_about_the_same_only_within_the_noise():
    within = text(seeded("plain", 56, 0.10, std=0.03), seeded("resnet", 56, 0.09, std=0.03))
    assert "ResNet-56 ends at 9.0% training error vs 10.0% for plain-56: about the same, within the noise" in within
    beyond = text(seeded("plain", 56, 0.10), seeded("resnet", 56, 0.04))
    assert "about the same" not in beyond and "ResNet-56 trains to a lower error" in beyond
    assert "trains to a lower error here" not in beyond  # said only when the plain net wins


# --- summary: unfinished runs and non-finite values ----------------------------------------------


def test_not_finished_names_only_unfinished_models_and_numbers_only_where_they_exist():
    said = text(row("plain", 20, 0.08), row("plain", 56, 0.12, note="running @ step 100/400"))
    assert "Not finished: plain-56 (running @ step 100/400). Numbers for these are from their last evaluation." in said
    assert "Not finished" not in text(row("plain", 20, 0.08), row("plain", 56, 0.12))
    # a run that diverged before its first evaluation has no numbers to be "from its last evaluation"
    never = text(row("plain", 20, 0.08), row("plain", 56, np.nan, note="diverged @ step 30"))
    assert "Not finished: plain-56 (diverged @ step 30; no evaluation yet)." in never
    assert "Numbers for these" not in never


def test_first_non_finite_value_only_for_the_run_that_saw_one(tmp_path):
    F.make_run(tmp_path, "plain", 20, layers=False)
    F.make_run(tmp_path, "plain", 110, state=R.DIVERGED, upto=200, layers=False,
               nonfinite={"step": 1180, "layer": "fc.weight", "what": "loss"})  # fmt: skip
    runs, _ = R.load_all(tmp_path)
    assert SUM.nonfinite_sentences(C.nonfinite(runs)) == ["In plain-110, the first non-finite loss was in fc.weight "
                                                          "at step 1,180."]  # fmt: skip
    healthy = [r for r in runs if r.depth == 20]
    assert SUM.nonfinite_sentences(C.nonfinite(healthy)) == []


# --- summary: layer responses (Fig. 7) ------------------------------------------------------------


def responses(rows) -> pd.DataFrame:
    return pd.DataFrame([{"family": f, "depth": d, "value": v} for f, d, v in rows])


def test_responses_smaller_at_every_depth_only_when_they_are():
    every = SUM.response_sentences(responses([("plain", 20, 1.0), ("resnet", 20, 0.5),
                                              ("plain", 56, 1.2), ("resnet", 56, 0.4)]))[0]  # fmt: skip
    assert every.startswith("Mean layer-response std at the end of training: ResNet-20 0.50 vs plain-20 1.00, "
                            "ResNet-56 0.40 vs plain-56 1.20; smaller for the residual nets at every depth")
    some = SUM.response_sentences(responses([("plain", 20, 1.0), ("resnet", 20, 1.5),
                                             ("plain", 56, 1.2), ("resnet", 56, 0.4)]))[0]  # fmt: skip
    assert "at every depth" not in some and "smaller for the residual nets at depth 56 only" in some
    assert "about the same at depth" not in some  # ResNet-20's are larger, not about the same


def test_responses_not_smaller_at_any_depth_only_when_none_is():
    larger = SUM.response_sentences(responses([("plain", 20, 1.0), ("resnet", 20, 1.5)]))[0]
    assert "not smaller for the residual nets at any depth, unlike Fig. 7 of He et al." in larger
    smaller = SUM.response_sentences(responses([("plain", 20, 1.0), ("resnet", 20, 0.5)]))[0]
    assert "not smaller" not in smaller and "unlike Fig. 7" not in smaller


def test_deep_against_shallow_resnet_response():
    def said(deep):
        (sentence,) = SUM.response_sentences(responses([("resnet", 20, 1.0), ("resnet", 56, deep)]))
        return sentence

    assert said(0.5) == "ResNet-56's mean response (0.50) is smaller than ResNet-20's (1.00)."
    assert said(1.5) == "ResNet-56's mean response (1.50) is larger than ResNet-20's (1.00)."
    assert said(1.02) == "ResNet-56's mean response (1.02) is about the same as ResNet-20's (1.00)."
    # no sentence without two ResNet depths, nor without a plain net to compare with
    assert SUM.response_sentences(responses([("resnet", 20, 1.0), ("plain", 56, 1.0)])) == []
    assert SUM.response_sentences(responses([])) == []


# --- the table's footnotes ----------------------------------------------------------------------


def test_footnote_says_whether_the_unfinished_model_has_an_evaluation():
    md = T.to_markdown(pd.DataFrame([row("plain", 20, 0.08, 0.1), row("plain", 56, np.nan, note="pending")]))
    assert "† plain-56: pending; no evaluation yet." in md and "errors at its last evaluation" not in md
    done = T.to_markdown(pd.DataFrame([row("plain", 20, 0.08, 0.1), row("plain", 56, 0.12, 0.14)]))
    assert "†" not in done and "no evaluation yet" not in done and "errors at its last evaluation" not in done


# --- wording: trends along depth ----------------------------------------------------------------


@pytest.mark.parametrize("ratio, said", [
    (0.0, "vanishes entirely (to 0 in float32, below about 1e-23 per element)"),
    (1e-3, "shrinks 1,000× (vanishing towards the input)"),
    (40.0, "grows 40× (exploding towards the input)"),
    (1.5, "changes 1.5× (within 2×: neither vanishing nor exploding)"),
    (0.6, "changes 0.6× (within 2×: neither vanishing nor exploding)"),
])  # fmt: skip
def test_trend_words(ratio, said):
    assert trend_word(ratio) == said
    if 0.5 < ratio < 2:  # a healthy ratio is called neither vanishing nor exploding, and nothing else
        assert "towards the input" not in said and "entirely" not in said
    else:
        assert "neither" not in said


# --- figures skipped ----------------------------------------------------------------------------


def _skipped(runs) -> list[str]:
    skipped: list[str] = []
    figure_jobs(_frames(runs, []), get_style("paper"), skipped, own_families(runs))
    return skipped


def test_training_curves_skipped_only_when_nothing_was_evaluated_or_logged(tmp_path):
    silent = R.read_run(own_run(tmp_path, "silent"))
    assert "training curves: no run has evaluated yet" in _skipped([silent])
    logged = R.read_run(own_run(tmp_path, "logged", {"loss": 0.5}))
    trained = R.read_run(F.make_run(tmp_path, "plain", 20, layers=False))
    for runs in ([logged], [trained], [silent, trained]):
        assert not any("training curves" in s for s in _skipped(runs))


# --- inputs: paths that hold no run --------------------------------------------------------------


def test_a_path_without_runs_is_named_and_one_with_runs_is_not(tmp_path):
    (tmp_path / "empty").mkdir()
    run_dir = F.make_run(tmp_path / "runs", "plain", 20, layers=False)
    _, _, warnings = find([tmp_path / "empty", tmp_path / "nope", tmp_path / "runs"])
    assert warnings == [f"skipped {tmp_path / 'empty'}: no run directory found there (none holds {R.SPEC})",
                        f"skipped {tmp_path / 'nope'}: {tmp_path / 'nope'} does not exist; pass a run directory "
                        "or a folder of runs"]  # fmt: skip
    found, _, warnings = find([tmp_path / "runs", run_dir])
    assert warnings == [] and found
    runs, unreadable = read_runs(found)
    assert len(runs) == 1 and unreadable == []  # no "unreadable run" for a sound one


# --- a whole report: the warnings about layer statistics --------------------------------------------


def test_layer_statistics_warnings_name_the_damaged_run_only(tmp_path):
    """One run with sound layer statistics, one whose layers.parquet is damaged, one recorded
    without them: only the damaged one is warned about, and the figures are not called skipped."""
    F.make_run(tmp_path / "runs", "plain", 20, steps=60, n_records=5)
    damaged = F.make_run(tmp_path / "runs", "resnet", 20, steps=60, n_records=5)
    F.make_run(tmp_path / "runs", "resnet", 56, steps=60, layers=False)
    truncate_file(damaged / R.LAYERS)
    result = build_report([tmp_path / "runs"], tmp_path / "out", formats="png", workers=1)
    warnings = result.warnings
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("layer statistics of resnet20-s0 skipped: ") and "damaged" in warnings[0]
    assert warnings[1].startswith("findings of resnet20-s0 skipped: ") and "damaged" in warnings[1]
    assert not any("resnet56" in w or "plain20" in w for w in warnings)  # recorded without them: no warning
    md = result.report.read_text(encoding="utf-8")
    assert "no layer statistics" not in md and "Skipped: gradient flow" not in md
    assert "Layer statistics missing for some runs" in md and "`resnet56-s0`: no layers.parquet" in md


def test_a_sound_report_has_no_warnings(tmp_path):
    F.make_run(tmp_path / "runs", "plain", 20, steps=60, n_records=5)
    F.make_run(tmp_path / "runs", "resnet", 20, steps=60, n_records=5)
    result = build_report([tmp_path / "runs"], tmp_path / "out", formats="png", workers=1)
    assert result.warnings == []
    md = result.report.read_text(encoding="utf-8")
    for absent in ("### Problems", "Skipped:", "Layer statistics missing", "Not checked", "Not finished",
                   "caveat", "drawn together", "first non-finite"):
        assert absent not in md, absent


def test_a_summary_with_nothing_to_compare_says_so_and_only_then(tmp_path):
    from gradlab.report.markdown import NOTHING_COMPARED

    for name, err in (("post-LN", 0.2), ("pre-LN", 0.3)):
        own_run(tmp_path / "own", name, {"train_err": err, "test_err": err + 0.1})
    own = build_report([tmp_path / "own"], tmp_path / "own-out", formats="png", workers=1)
    md = own.report.read_text(encoding="utf-8")
    assert f"## Summary\n\n- {NOTHING_COMPARED}\n" in md
    F.make_run(tmp_path / "zoo", "plain", 20, steps=60, n_records=5)
    F.make_run(tmp_path / "zoo", "resnet", 20, steps=60, n_records=5)
    zoo = build_report([tmp_path / "zoo"], tmp_path / "zoo-out", formats="png", workers=1)
    assert NOTHING_COMPARED not in zoo.report.read_text(encoding="utf-8")


def test_all_layer_files_damaged_is_not_called_no_layer_statistics(tmp_path):
    damaged = F.make_run(tmp_path / "runs", "plain", 20, steps=60, n_records=5)
    truncate_file(damaged / R.LAYERS)
    result = build_report([tmp_path / "runs"], tmp_path / "out", formats="png", workers=1)
    assert "no readable layer statistics in any run: gradient-flow, heatmap and response figures skipped" in result.warnings
    assert not any(w.startswith("no layer statistics") for w in result.warnings)
    never = tmp_path / "never"
    F.make_run(never, "plain", 20, steps=60, layers=False)
    result = build_report([never], tmp_path / "out2", formats="png", workers=1)
    assert "no layer statistics in any run: gradient-flow, heatmap and response figures skipped" in result.warnings
