"""A short written summary that states what the numbers show, and only that: how the
models compare (degradation, residual against plain nets, family against family, Fig. 7's
responses). What is wrong in a single run is said by the findings (gradlab.findings), above
the summary.

Comparisons use final errors per model (mean over seeds). A difference is stated only when
the 95 % t-intervals of the two means do not overlap (gradlab.seed_noise); otherwise it is
"within the noise of n seeds". With one seed there is no noise estimate, and the sentence
says so instead of judging.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab import families as fam
from gradlab.families import PLAIN, RESNET
from gradlab.report.wording import fmt_pair, fmt_pct, fmt_std
from gradlab.seed_noise import Interval, apart, from_summary, seeds_words

RESPONSE_TOLERANCE = 0.05  # mean responses within 5 % are "about the same"


def _interval(m: pd.Series, which: str = "train") -> Interval:
    return from_summary(m[f"{which}_mean"], m[f"{which}_std"], m["n"])


def judge(a: pd.Series, b: pd.Series, which: str = "train") -> tuple[int | None, str]:
    """(sign of b - a when beyond the intervals, 0 within them, None with one seed; the words
    that say on what)."""
    ia, ib = _interval(a, which), _interval(b, which)
    beyond = apart(ia, ib)
    if beyond is None:
        return None, "with one seed each no noise estimate exists"
    if not beyond:
        return 0, f"within the noise of {seeds_words(ia, ib)} (their 95 % intervals overlap)"
    return int(np.sign(ib.mean - ia.mean)), f"beyond the 95 % intervals of {seeds_words(ia, ib)}"


def _caveat(*models: pd.Series) -> str:
    bad = [f"{m['label']} {m['note']}" for m in models if m["note"]]
    return f" (caveat: {', '.join(bad)}, so it did not finish its training budget)" if bad else ""


def _depth_sentence(family: str, a: pd.Series, b: pd.Series) -> str:
    """Shallowest ``a`` against deepest ``b`` of one family: degradation for plain nets,
    whether depth still helps for residual ones."""
    sign, basis = judge(a, b)
    xb, xa = fmt_pair(b["train_mean"], a["train_mean"])
    caveat = _caveat(a, b)
    residual = fam.get(family).residual
    if sign is None:
        what = "a cost of depth" if residual else "degradation"
        return (f"{b['label']} ends at {xb} training error and {a['label']} at {xa}; with one seed each no noise "
                f"estimate exists, so whether this is {what} is not judged{caveat}.")
    if sign == 0:
        verdict = "the deeper residual net is not shown harder to train" if residual else "no degradation shown at this budget"
        basis = basis.replace(" (their", f" ({xb} vs {xa} training error; their")
        return f"{b['label']} and {a['label']} end {basis}: {verdict}{caveat}."
    if not fam.get(family).residual:
        if sign > 0:
            return f"{b['label']} ends with higher training error ({xb}) than {a['label']} ({xa}), {basis}: degradation{caveat}."
        return (f"{b['label']} ends with lower training error ({xb}) than {a['label']} ({xa}), {basis}: "
                f"no degradation at this budget{caveat}.")
    if sign < 0:
        return (f"{b['label']} ends lower ({xb} training error) than {a['label']} ({xa}), {basis}: "
                f"deeper residual nets are not harder to train{caveat}.")
    return (f"{b['label']} ends with higher training error ({xb}) than {a['label']} ({xa}), {basis}: "
            f"at this budget the deeper residual net is harder to train too{caveat}.")


def degradation_sentences(models: pd.DataFrame) -> list[str]:
    """Deepest vs shallowest net of every family (plain nets read as degradation, residual
    families as whether depth still helps), then each residual family against the plain
    nets, and each remedy against the ResNets, at a shared depth."""
    out = []
    for family in fam.ordered(models["family"]):
        sub = models[(models["family"] == family) & models["train_mean"].notna()].sort_values("depth")
        done = sub[finished(sub)]
        if len(done) >= 2:  # compare finished models; unfinished ones are listed on their own
            sub = done
        if len(sub) < 2:
            continue
        a, b = sub.iloc[0], sub.iloc[-1]  # shallow, deep
        s = _depth_sentence(family, a, b)
        if np.isfinite(b["test_mean"]) and np.isfinite(a["test_mean"]):
            tb, ta = fmt_pair(b["test_mean"], a["test_mean"])
            s += f" Test error: {tb} vs {ta}."
        if len(sub) > 2:
            s += " Training error by depth: " + ", ".join(f"{m['label']} {fmt_pct(m['train_mean'])}"
                                                          for _, m in sub.iterrows()) + "."
        out.append(s)
    return out + paired_sentences(models)


def finished(models: pd.DataFrame) -> pd.Series:
    """Models all of whose runs finished."""
    if "n_unfinished" in models:
        return models["n_unfinished"] == 0
    return models["note"] == ""


def paired_sentences(models: pd.DataFrame) -> list[str]:
    """Each residual family against the plain nets with the same options, then each remedy
    against the ResNets with the same options, at the deepest depth both were trained at
    (finished ones preferred)."""
    out = []
    present = set(models["family"])
    for family in fam.ordered(models["family"]):
        look = fam.get(family)
        if not look.residual:
            continue
        plain, resnet = fam.keyed(PLAIN, look.variant), fam.keyed(RESNET, look.variant)
        for partner in (plain, resnet):
            if partner in present and partner != family:
                out += _paired(models[models["family"] == partner].set_index("depth"),
                               models[models["family"] == family].set_index("depth"))  # fmt: skip
    return out


def _paired(other: pd.DataFrame, res: pd.DataFrame) -> list[str]:
    """``res``'s model against ``other``'s at their deepest shared depth."""
    shared = sorted(set(other.index) & set(res.index))
    shared = [d for d in shared if np.isfinite(other.loc[d, "train_mean"]) and np.isfinite(res.loc[d, "train_mean"])]
    if not shared:
        return []
    done = [d for d in shared if other.loc[d, "note"] == "" and res.loc[d, "note"] == ""]
    d = (done or shared)[-1]
    p, r = other.loc[d], res.loc[d]
    sign, basis = judge(p, r)
    xr, xp = fmt_pair(r["train_mean"], p["train_mean"])
    if sign is None:
        verdict = f"{basis}, so which trains lower is not judged"
    elif sign < 0:
        verdict = f"{r['label']} trains to a lower error, {basis}"
    elif sign > 0:
        verdict = f"{p['label']} trains to a lower error here, {basis}"
    else:
        verdict = f"about the same, {basis}"
    return [f"At depth {d}, {r['label']} ends at {xr} training error vs {xp} for {p['label']}: {verdict}{_caveat(p, r)}."]


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
    compared = degradation_sentences(models) if evaluated else []
    if evaluated and (models["n"] > 1).any():
        out.append("Final errors are means over seeds; a difference is stated only when the 95 % t-intervals "
                   "of the two means do not overlap.")
    elif compared:  # said of the comparisons below: with none (runs of one's own loop, no shared depth) it is not
        out.append("Each model has one seed, so no noise estimate exists: differences are reported, not judged "
                   "(run seeds, such as --seeds 0,1,2, to judge them).")
    out += compared
    if responses is not None:
        out += response_sentences(responses)
    out += nonfinite_sentences(list(nonfinite))
    if not evaluated:  # (runs of someone's own loop need not log errors at all)
        return out or ["No run has evaluated yet: there are no final errors to compare."]
    unfinished = models[models["note"] != ""]
    if not unfinished.empty:
        evaluated_too = unfinished["train_mean"].notna()
        out.append(
            "Not finished: "
            + "; ".join(f"{m['label']} ({m['note']}{'' if ok else '; no evaluation yet'})"
                        for ok, (_, m) in zip(evaluated_too, unfinished.iterrows()))
            + (". Numbers for these are from their last evaluation." if evaluated_too.any() else ".")
        )
    return out
