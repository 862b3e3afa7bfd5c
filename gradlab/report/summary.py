"""A short written summary that states what the numbers show, and only that: how the
models compare (degradation, residual against plain nets, Fig. 7's responses). What is
wrong in a single run is said by the findings (gradlab.findings), above the summary.

Comparisons use final errors per model (mean over seeds). A difference counts only when
it exceeds a tolerance: the combined seed spread sqrt(std_a² + std_b²) when both models
have several seeds, else SINGLE_RUN_TOLERANCE (0.5 percentage points).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradlab import families as fam
from gradlab.families import PLAIN, RESNET
from gradlab.report.wording import fmt_pair, fmt_pct, fmt_std, pct

SINGLE_RUN_TOLERANCE = 0.005  # 0.5 percentage points, as a fraction
RESPONSE_TOLERANCE = 0.05  # mean responses within 5 % are "about the same"


def tolerance(a: pd.Series, b: pd.Series, which: str = "train") -> float:
    """How large a difference in final error must be to count (fraction)."""
    sa, sb = a[f"{which}_std"], b[f"{which}_std"]
    if a["n"] > 1 and b["n"] > 1 and np.isfinite(sa) and np.isfinite(sb):
        return float(math.hypot(sa, sb))
    return SINGLE_RUN_TOLERANCE


def _caveat(*models: pd.Series) -> str:
    bad = [f"{m['label']} {m['note']}" for m in models if m["note"]]
    return f" (caveat: {', '.join(bad)}, so it did not finish its training budget)" if bad else ""


def _tol_words(a: pd.Series, b: pd.Series, tol: float) -> str:
    if a["n"] > 1 and b["n"] > 1:
        return f"within the seed spread of ±{pct(tol):.2g} points"
    return f"within {pct(tol):.2g} points (single run each)"


def degradation_sentences(models: pd.DataFrame) -> list[str]:
    """Deepest vs shallowest net of every family (plain nets read as degradation, residual
    families as whether depth still helps), then each residual family against the plain
    nets at a shared depth."""
    out = []
    for family in fam.ordered(models["family"]):
        sub = models[(models["family"] == family) & models["train_mean"].notna()].sort_values("depth")
        done = sub[finished(sub)]
        if len(done) >= 2:  # compare finished models; unfinished ones are listed on their own
            sub = done
        if len(sub) < 2:
            continue
        a, b = sub.iloc[0], sub.iloc[-1]  # shallow, deep
        tol = tolerance(a, b)
        diff = b["train_mean"] - a["train_mean"]
        xb, xa = fmt_pair(b["train_mean"], a["train_mean"])
        test = ""
        if np.isfinite(b["test_mean"]) and np.isfinite(a["test_mean"]):
            tb, ta = fmt_pair(b["test_mean"], a["test_mean"])
            test = f" Test error: {tb} vs {ta}."
        caveat = _caveat(a, b)
        if not fam.get(family).residual:
            if diff > tol:
                s = f"{b['label']} ends with higher training error ({xb}) than {a['label']} ({xa}): degradation{caveat}."
            elif diff < -tol:
                s = (f"{b['label']} ends with lower training error ({xb}) than {a['label']} ({xa}): "
                     f"no degradation at this budget{caveat}.")  # fmt: skip
            else:
                s = (f"{b['label']} and {a['label']} end with similar training error ({xb} vs {xa}, "
                     f"{_tol_words(a, b, tol)}): no degradation at this budget{caveat}.")  # fmt: skip
        else:
            if diff < -tol:
                s = (f"{b['label']} ends lower ({xb} training error) than {a['label']} ({xa}): "
                     f"deeper residual nets are not harder to train{caveat}.")  # fmt: skip
            elif diff <= tol:
                s = (f"{b['label']} ends within the noise of {a['label']} ({xb} vs {xa} training error, "
                     f"{_tol_words(a, b, tol)}): the deeper residual net is not harder to train{caveat}.")  # fmt: skip
            else:
                s = (f"{b['label']} ends with higher training error ({xb}) than {a['label']} ({xa}): "
                     f"at this budget the deeper residual net is harder to train too{caveat}.")  # fmt: skip
        s += test
        if len(sub) > 2:
            s += (
                " Training error by depth: "
                + ", ".join(f"{m['label']} {fmt_pct(m['train_mean'])}" for _, m in sub.iterrows())
                + "."
            )
        out.append(s)
    out += paired_sentences(models)
    return out


def finished(models: pd.DataFrame) -> pd.Series:
    """Models all of whose runs finished."""
    if "n_unfinished" in models:
        return models["n_unfinished"] == 0
    return models["note"] == ""


def paired_sentences(models: pd.DataFrame) -> list[str]:
    """Each residual family against the plain nets with the same options, at the deepest
    depth both were trained at (finished ones preferred)."""
    out = []
    for family in fam.ordered(models["family"]):
        partner = fam.keyed(PLAIN, fam.get(family).variant)
        if fam.get(family).residual and partner in set(models["family"]):
            out += _paired(models[models["family"] == partner].set_index("depth"),
                           models[models["family"] == family].set_index("depth"))  # fmt: skip
    return out


def _paired(plain: pd.DataFrame, res: pd.DataFrame) -> list[str]:
    shared = sorted(set(plain.index) & set(res.index))
    shared = [d for d in shared if np.isfinite(plain.loc[d, "train_mean"]) and np.isfinite(res.loc[d, "train_mean"])]
    if not shared:
        return []
    done = [d for d in shared if plain.loc[d, "note"] == "" and res.loc[d, "note"] == ""]
    d = (done or shared)[-1]
    p, r = plain.loc[d], res.loc[d]
    tol = tolerance(p, r)
    xr, xp = fmt_pair(r["train_mean"], p["train_mean"])
    diff = r["train_mean"] - p["train_mean"]
    if diff < -tol:
        verdict = "the residual net trains to a lower error"
    elif diff > tol:
        verdict = "the plain net trains to a lower error here"
    else:
        verdict = f"about the same ({_tol_words(p, r, tol)})"
    return [
        f"At depth {d}, {r['label']} ends at {xr} training error vs {xp} for {p['label']}: {verdict}{_caveat(p, r)}."
    ]


def response_sentences(responses: pd.DataFrame) -> list[str]:
    """Fig. 7's claims, checked: ResNet responses smaller than plain ones; smaller when deeper."""
    if responses.empty:
        return []
    mean = responses.groupby(["family", "depth"])["value"].mean()
    out = []
    plain = (
        mean.get(PLAIN, pd.Series(dtype=float)) if PLAIN in mean.index.get_level_values(0) else pd.Series(dtype=float)
    )
    res = (
        mean.get(RESNET, pd.Series(dtype=float)) if RESNET in mean.index.get_level_values(0) else pd.Series(dtype=float)
    )
    shared = sorted(set(plain.index) & set(res.index))
    if shared:
        pairs = ", ".join(f"ResNet-{d} {fmt_std(res[d])} vs plain-{d} {fmt_std(plain[d])}" for d in shared)
        # smaller only beyond RESPONSE_TOLERANCE: equal responses (1.00 vs 1.00) are not smaller
        smaller = [d for d in shared if res[d] < (1 - RESPONSE_TOLERANCE) * plain[d]]
        same = [d for d in shared if d not in smaller and res[d] <= (1 + RESPONSE_TOLERANCE) * plain[d]]
        if len(smaller) == len(shared):
            verdict = "smaller for the residual nets at every depth, as in Fig. 7 of He et al. (residual functions stay closer to zero)"
        elif smaller:
            verdict = (f"smaller for the residual nets at depth {', '.join(map(str, smaller))} only"
                       + (f", about the same at depth {', '.join(map(str, same))}" if same else ""))
        elif len(same) == len(shared):
            verdict = f"about the same at every depth (within {RESPONSE_TOLERANCE:.0%}), unlike Fig. 7 of He et al."
        else:
            verdict = "not smaller for the residual nets at any depth, unlike Fig. 7 of He et al."
        out.append(f"Mean layer-response std at the end of training: {pairs}; {verdict}.")
    if len(res) >= 2:
        a, b = res.index.min(), res.index.max()
        if res[b] < (1 - RESPONSE_TOLERANCE) * res[a]:
            rel = "smaller than"
        elif res[b] > (1 + RESPONSE_TOLERANCE) * res[a]:
            rel = "larger than"
        else:
            rel = "about the same as"
        out.append(f"ResNet-{b}'s mean response ({fmt_std(res[b])}) is {rel} ResNet-{a}'s ({fmt_std(res[a])}).")
    return out


def nonfinite_sentences(nonfinite: list[dict]) -> list[str]:
    """Where each run first saw a non-finite value (the recorder's finding, in status.json)."""
    return [f"In {n['label']}, the first non-finite {n['what']} was in {n['layer']} at step {n['step']:,}."
            for n in nonfinite]  # fmt: skip


def summarize(
    models: pd.DataFrame,
    flow_models: pd.DataFrame | None = None,
    responses: pd.DataFrame | None = None,
    phase_labels: dict[str, str] | None = None,
    nonfinite: list[dict] = (),
) -> list[str]:
    """Sentences for report.md, each backed by the numbers it quotes."""
    out = []
    evaluated = not models.empty and models["train_mean"].notna().any()
    if evaluated and (models["n"] > 1).any():
        out.append(
            "Final errors are means over seeds; a difference counts only when larger than the seed spread "
            "(sqrt(std_a² + std_b²))."
        )
    if evaluated:
        out += degradation_sentences(models)
    if responses is not None:
        out += response_sentences(responses)
    out += nonfinite_sentences(list(nonfinite))
    if not evaluated:  # (runs of someone's own loop need not log errors at all)
        return out or ["No run has evaluated yet: there are no final errors to compare."]
    unfinished = models[models["note"] != ""]
    if not unfinished.empty:
        out.append(
            "Not finished: "
            + "; ".join(f"{m['label']} ({m['note']})" for _, m in unfinished.iterrows())
            + ". Numbers for these are from their last evaluation."
        )
    return out
