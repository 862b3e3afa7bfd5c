"""Table 6 style table (Markdown and LaTeX) and the written summary, from known numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab import runs as R
from gradlab.report import collect as C
from gradlab.report import summary as SUM
from gradlab.report import tables as T

from gradlab.bench import synthetic_runs as F


def models_from(tmp_path):
    runs, problems = R.load_all(tmp_path)
    assert not problems
    return C.by_model(C.finals(runs), C.run_table(runs))


def model_row(family, depth, train, test, n=1, train_std=np.nan, test_std=np.nan, note="", params=269722):
    label = f"ResNet-{depth}" if family == "resnet" else f"plain-{depth}"
    return {
        "family": family, "depth": depth, "label": label, "params": params, "n": n,
        "train_mean": train, "train_std": train_std, "train_min": train, "train_max": train,
        "test_mean": test, "test_std": test_std, "test_min": test, "test_max": test,
        "seeds": "0", "note": note,
    }  # fmt: skip


def test_markdown_and_latex_rows_single_seed(tmp_path):
    F.make_run(tmp_path, "plain", 20, final_train_err=0.0812, final_test_err=0.1034, layers=False)
    F.make_run(tmp_path, "resnet", 56, final_train_err=0.0123, final_test_err=0.0701, layers=False)
    models = models_from(tmp_path)
    md = T.to_markdown(models)
    assert "| model | depth | #params | n | train error (%) | test error (%) |" in md
    assert "| plain-20 | 20 | 0.27M | 1 | 8.12 | 10.34 |" in md
    assert "| ResNet-56 | 56 | 0.85M | 1 | 1.23 | 7.01 |" in md
    assert "chosen on validation" not in md  # nothing was chosen
    assert md.index("plain-20") < md.index("ResNet-56")
    tex = T.to_latex(models)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrrr}"):
        assert rule in tex
    assert r"train error (\%)" in tex and r"\#params" in tex
    assert r"plain-20 & 20 & 0.27M & 1 & 8.12 & 10.34 \\" in tex
    assert r"ResNet-56 & 56 & 0.85M & 1 & 1.23 & 7.01 \\" in tex
    # every % in the body is escaped
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert "%" not in body.replace(r"\%", "")


def test_mean_and_std_over_three_seeds(tmp_path):
    trains, tests = [0.10, 0.12, 0.17], [0.20, 0.21, 0.26]
    for seed, (tr, te) in enumerate(zip(trains, tests)):
        F.make_run(tmp_path, "plain", 56, seed, final_train_err=tr, final_test_err=te, layers=False)
    models = models_from(tmp_path)
    mean, std = 100 * np.mean(trains), 100 * np.std(trains, ddof=1)
    tmean, tstd = 100 * np.mean(tests), 100 * np.std(tests, ddof=1)
    cell = f"{mean:.2f} ± {std:.2f}"
    assert cell == "13.00 ± 3.61"
    # 95 % t-interval, n = 3: t(0.975, 2) = 4.303, half-width 4.303 * 3.606 / sqrt(3) = 8.96
    band, tband = "[4.04, 21.96]", f"[{tmean - 4.303 * tstd / 3**0.5:.2f}, {tmean + 4.303 * tstd / 3**0.5:.2f}]"
    md = T.to_markdown(models)
    assert f"| plain-56 | 56 | 0.85M | 3 | {cell} {band} | {tmean:.2f} ± {tstd:.2f} {tband} |" in md
    tex = T.to_latex(models)
    assert rf"plain-56 & 56 & 0.85M & 3 & {mean:.2f} $\pm$ {std:.2f} {band} & {tmean:.2f} $\pm$ {tstd:.2f} {tband} \\" in tex


def test_unfinished_models_get_a_footnote(tmp_path):
    F.make_run(tmp_path, "plain", 20, layers=False)
    F.make_run(tmp_path, "plain", 110, state=R.DIVERGED, upto=200, layers=False,
               nonfinite={"step": 180, "layer": "fc.weight", "what": "loss"})  # fmt: skip
    models = models_from(tmp_path)
    md = T.to_markdown(models)
    assert "| plain-110† | 110 |" in md
    assert "† plain-110: diverged @ step 180; errors at its last evaluation." in md
    tex = T.to_latex(models)
    assert r"plain-110$^\dagger$ & 110" in tex
    assert r"$^\dagger$ plain-110: diverged @ step 180" in tex


def test_latex_escape():
    assert T.latex_escape("a_b 5% & #1") == r"a\_b 5\% \& \#1"
    assert T.latex_escape("1.0 ± 0.1") == r"1.0 $\pm$ 0.1"


def test_params_format_like_the_paper():
    assert [T.format_params(p) for p in (269722, 853018, 1727962, 19_400_000)] == ["0.27M", "0.85M", "1.7M", "19.4M"]


# --- summary ---------------------------------------------------------------------------


def _seeded(family, depth, train, test, n=3, std=0.002):
    return model_row(family, depth, train, test, n=n, train_std=std, test_std=std)


def test_summary_states_degradation_with_the_numbers_beyond_the_intervals():
    models = pd.DataFrame([_seeded("plain", 20, 0.081, 0.102), _seeded("plain", 56, 0.123, 0.141),
                           _seeded("resnet", 20, 0.060, 0.085), _seeded("resnet", 56, 0.041, 0.071)])
    sentences = SUM.summarize(models)
    text = " ".join(sentences)
    assert sentences[0] == ("Final errors are means over seeds; a difference is stated only when the 95 % "
                            "t-intervals of the two means do not overlap.")
    assert ("plain-56 ends with higher training error (12.3%) than plain-20 (8.1%), beyond the 95 % intervals of "
            "3 seeds: degradation.") in text
    assert ("ResNet-56 ends lower (4.1% training error) than ResNet-20 (6.0%), beyond the 95 % intervals of 3 seeds: "
            "deeper residual nets are not harder to train.") in text
    assert ("At depth 56, ResNet-56 ends at 4.1% training error vs 12.3% for plain-56: ResNet-56 trains to a lower "
            "error, beyond the 95 % intervals of 3 seeds.") in text
    assert "no degradation" not in text and "noise" not in text and "not judged" not in text


def test_summary_with_one_seed_says_no_noise_estimate_exists():
    models = pd.DataFrame([model_row("plain", 20, 0.081, 0.102), model_row("plain", 56, 0.123, 0.141),
                           model_row("resnet", 56, 0.041, 0.071)])
    sentences = SUM.summarize(models)
    text = " ".join(sentences)
    assert sentences[0].startswith("Each model has one seed, so no noise estimate exists")
    assert ("plain-56 ends at 12.3% training error and plain-20 at 8.1%; with one seed each no noise estimate "
            "exists, so whether this is degradation is not judged.") in text
    assert ("At depth 56, ResNet-56 ends at 4.1% training error vs 12.3% for plain-56: with one seed each no noise "
            "estimate exists, so which trains lower is not judged.") in text
    assert ": degradation" not in text and "within the noise" not in text and "trains to a lower error" not in text


def test_summary_says_when_there_is_no_degradation():
    models = pd.DataFrame([_seeded("plain", 20, 0.081, 0.102), _seeded("plain", 56, 0.061, 0.080)])
    text = " ".join(SUM.summarize(models))
    assert "no degradation at this budget" in text and "beyond the 95 % intervals of 3 seeds" in text
    assert ": degradation" not in text
    assert "8.1%" in text and "6.1%" in text


def test_summary_differences_inside_the_intervals_are_within_the_noise():
    models = pd.DataFrame([
        model_row("plain", 20, 0.080, 0.10, n=3, train_std=0.02, test_std=0.01),
        model_row("plain", 56, 0.095, 0.11, n=2, train_std=0.02, test_std=0.01),
        model_row("fixup", 56, 0.090, 0.11, n=2, train_std=0.01, test_std=0.01) | {"label": "Fixup-56"},
    ])
    sentences = SUM.summarize(models)
    text = " ".join(sentences)
    assert ("plain-56 and plain-20 end within the noise of 2 and 3 seeds (9.5% vs 8.0% training error; their 95 % "
            "intervals overlap): no degradation shown at this budget.") in text
    assert ("At depth 56, Fixup-56 ends at 9.0% training error vs 9.5% for plain-56: about the same, within the "
            "noise of 2 seeds (their 95 % intervals overlap).") in text
    assert ": degradation" not in text and "no noise estimate" not in text


def test_summary_compares_a_remedy_with_the_resnets():
    models = pd.DataFrame([_seeded("resnet", 56, 0.03, 0.04), _seeded("fixup", 56, 0.20, 0.22) | {"label": "Fixup-56"}])
    text = " ".join(SUM.summarize(models))
    assert ("At depth 56, Fixup-56 ends at 20.0% training error vs 3.0% for ResNet-56: ResNet-56 trains to a lower "
            "error here, beyond the 95 % intervals of 3 seeds.") in text


def test_summary_deeper_resnet_worse_is_said_plainly():
    models = pd.DataFrame([_seeded("resnet", 20, 0.05, 0.08), _seeded("resnet", 110, 0.09, 0.12)])
    text = " ".join(SUM.summarize(models))
    assert "ResNet-110 ends with higher training error (9.0%) than ResNet-20 (5.0%)" in text
    assert "not harder to train" not in text


def test_summary_names_unfinished_runs():
    models = pd.DataFrame(
        [model_row("plain", 20, 0.08, 0.10), model_row("plain", 56, 0.5, 0.5, note="diverged @ step 1200")]
    )
    text = " ".join(SUM.summarize(models))
    assert "caveat: plain-56 diverged @ step 1200" in text
    assert "Not finished: plain-56 (diverged @ step 1200)." in text


def test_no_evaluation_yet():
    models = pd.DataFrame([model_row("plain", 20, np.nan, np.nan)])
    assert SUM.summarize(models) == ["No run has evaluated yet: there are no final errors to compare."]


def test_equal_layer_responses_are_not_called_smaller():
    rows = [("plain", 8, 1.0), ("resnet", 8, 1.0), ("plain", 20, 1.7), ("resnet", 20, 0.99)]
    responses = pd.DataFrame([{"family": f, "depth": d, "value": v} for f, d, v in rows])
    (sentence, _) = SUM.response_sentences(responses)
    assert "ResNet-8 1.00 vs plain-8 1.00" in sentence
    assert "smaller for the residual nets at depth 20 only, about the same at depth 8" in sentence
    equal = responses.assign(value=1.0)
    assert "about the same at every depth" in SUM.response_sentences(equal)[0]
