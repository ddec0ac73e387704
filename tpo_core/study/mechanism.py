"""Why transfer does or does not help: what each iteration's preference pairs are, and what training does to them.

Per run, seed, iteration and preference pair (:func:`pair_diagnostics`):

* ``gold_chosen``, ``gold_rejected``, ``gold_margin``: r* of the chosen (best) and rejected (worst) candidate
  and their difference, from the iteration's records;
* ``chosen_transferred``: whether the chosen response came from a source (TPO's transfer at work);
* ``logp_chosen_before`` / ``_after``, ``logp_rejected_before`` / ``_after``: the summed log-probability of
  each response under the policy entering the iteration (π_0 at iteration 1) and under the policy it
  trained (``iter_k``). *Likelihood displacement* (Razin et al. 2024; Pal et al. 2024) is DPO lowering
  ``log π(chosen)`` while it widens the margin: ``dlogp_chosen = after − before < 0``;
* ``kl_pair``: ``½(dlogp_chosen + dlogp_rejected)``, how far the pair's log-likelihood moved, without β
  (the trainer's ``implicit_kl`` after training; :data:`tpo_core.tpo.trainer.LOG_COLUMNS`);
* ``len_chosen``, ``len_rejected``: words in each response.

:func:`summarize` averages them per run and iteration with a t-interval across seeds, adds
``distinct_2`` (:func:`distinct_n` of the chosen responses, pooled over the iteration's pairs) and the
trainer's last logged ``loss`` and ``accuracy`` (:func:`tpo_core.study.runs.training_logs`).

The log-probabilities are computed from the checkpoints once and cached in
``results/<preset>/mechanism/<run>/seed_<s>.csv``, rows reused only when the two checkpoints' content ids
(the digests of their ``checksums.json``) are the ones on disk.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tpo_core.study.evaluation import t_interval
from tpo_core.study.loading import Study, check_seeds
from tpo_core.plumbing.provenance import CHECKSUMS, checkpoint_id, sha256_json
from tpo_core.study.runs import check_run, pairs, records, run_dir

__all__ = ["distinct_n", "pair_logprobs", "pair_diagnostics", "summarize", "diagnose", "interval_text", "headline", "SIGNED",
           "PAIR_COLUMNS", "PAPER_TABLE2"]

#: The one row of the paper's Table 2 (App. I.2) that is known: empirical TPO against no transfer at iteration 3,
#: with Alg_PO = IPO and XPO (win rate %, 95% CI half-width, 3 seeds), for display beside the IPO experiment.
PAPER_TABLE2 = pd.DataFrame([("ipo", 3, 55.3, 1.1), ("xpo", 3, 52.2, 1.6)],
                            columns=["loss", "iteration", "paper_win_rate", "paper_ci_halfwidth"])

#: The per-pair columns of :func:`pair_diagnostics` (besides method, seed, iteration, prompt_idx).
PAIR_COLUMNS = ("chosen_transferred", "gold_chosen", "gold_rejected", "gold_margin", "logp_chosen_before",
                "logp_chosen_after", "logp_rejected_before", "logp_rejected_after", "dlogp_chosen", "dlogp_rejected",
                "kl_pair", "len_chosen", "len_rejected")


def distinct_n(texts, n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): the number of distinct word n-grams over the number of n-grams, pooled
    over ``texts`` (whitespace words); 1 when no n-gram repeats, small when responses repeat each other.
    NaN when the texts hold no n-gram."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of str, not one str")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    grams = [tuple(w[i:i + n]) for t in texts for w in [str(t).split()] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def _checkpoint_id(folder) -> str:
    ident = checkpoint_id(folder)
    if ident is None:
        raise FileNotFoundError(f"{folder} has no {CHECKSUMS}: not a finished checkpoint")
    return ident


@torch.no_grad()
def pair_logprobs(policy, documents, chosen, rejected, *, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-probabilities ``(log π(chosen | x), log π(rejected | x))`` under ``policy``
    (:meth:`tpo_core.world.policy.Policy.sequence_logprobs`, eval mode), each of shape ``(n_pairs,)``."""
    documents, chosen, rejected = list(documents), list(chosen), list(rejected)
    if not len(documents) == len(chosen) == len(rejected):
        raise ValueError("documents, chosen and rejected must have equal lengths")
    policy.model.eval()
    out = []
    for responses in (chosen, rejected):
        vals = [policy.sequence_logprobs(documents[s:s + batch_size], responses[s:s + batch_size]).double().cpu()
                for s in range(0, len(documents), batch_size)]
        out.append(torch.cat(vals).numpy() if vals else np.zeros(0))
    return out[0], out[1]


def _logprob_rows(study: Study, name: str, seed: int, its: pd.DataFrame) -> pd.DataFrame:
    """Before/after log-probabilities of the pairs ``its`` (one run and seed, all its iterations), cached."""
    from tpo_core.plumbing.provenance import write_csv
    from tpo_core.study.run_loop import iteration_prompts
    from tpo_core.study.checkpoints import load_checkpoint

    out_dir = run_dir(study, name, seed)
    path = study.root / "mechanism" / name / out_dir.parent.name / f"seed_{seed}.csv"  # under the run's key
    old = pd.read_csv(path) if path.is_file() else None
    pi0_id = sha256_json(study.pi0_identity)[:16]
    frames, policy, holds, computed = [], None, None, False  # holds: the folder whose weights policy has
    for k, group in its.groupby("iteration", sort=True):
        before_id = pi0_id if k == 1 else _checkpoint_id(out_dir / f"iter_{k - 1}")
        after_id = _checkpoint_id(out_dir / f"iter_{k}")
        if old is not None:
            rows = old[(old.iteration == k) & (old.before == before_id) & (old.after == after_id)]
            if len(rows) == len(group):
                frames.append(rows)
                continue
        docs, _ = iteration_prompts(study.preset, study.online, seed, int(k))
        documents = [docs[i] for i in group.prompt_idx]
        values = {}
        for when, folder in (("before", None if k == 1 else out_dir / f"iter_{k - 1}"), ("after", out_dir / f"iter_{k}")):
            if policy is None or folder is None:
                policy, holds = study.new_pi0(), None
            if folder is not None and folder != holds:  # iteration k's "after" is iteration k+1's "before"
                load_checkpoint(policy.model, folder)
                holds = folder
            values[when] = pair_logprobs(policy, documents, list(group.chosen), list(group.rejected))
        computed = True
        frames.append(pd.DataFrame({"iteration": k, "prompt_idx": group.prompt_idx.to_numpy(),
                                    "before": before_id, "after": after_id,
                                    "logp_chosen_before": values["before"][0], "logp_chosen_after": values["after"][0],
                                    "logp_rejected_before": values["before"][1],
                                    "logp_rejected_after": values["after"][1]}))
    rows = pd.concat(frames, ignore_index=True)
    if computed:
        write_csv(rows, path, study.sharding)
    return rows


def pair_diagnostics(study: Study, names, seeds=None) -> pd.DataFrame:
    """One row per run, seed, iteration and preference pair: :data:`PAIR_COLUMNS` (see the module docstring).

    Runs must have been trained from this study's settings (:func:`tpo_core.study.runs.check_run`); runs or seeds
    without finished iterations are skipped."""
    seeds = check_seeds(study, seeds)
    frames = []
    for name in names:
        for s in seeds:
            prs = pairs(study, [name], [s])
            if prs.empty:
                continue
            check_run(study, name, s)
            rec = records(study, [name], [s])[["iteration", "prompt_idx", "gold_best", "gold_worst"]]
            done = {int(d.name[5:]) for d in run_dir(study, name, s).glob("iter_*") if d.name[5:].isdigit()}
            prs = prs[prs.iteration.isin(done)]
            lp = _logprob_rows(study, name, s, prs)
            df = (prs.merge(rec, on=["iteration", "prompt_idx"], validate="one_to_one")
                  .merge(lp.drop(columns=["before", "after"]), on=["iteration", "prompt_idx"], validate="one_to_one"))
            df = df.rename(columns={"gold_best": "gold_chosen", "gold_worst": "gold_rejected"})
            df["gold_margin"] = df.gold_chosen - df.gold_rejected
            df["dlogp_chosen"] = df.logp_chosen_after - df.logp_chosen_before
            df["dlogp_rejected"] = df.logp_rejected_after - df.logp_rejected_before
            df["kl_pair"] = 0.5 * (df.dlogp_chosen + df.dlogp_rejected)
            df["len_chosen"] = df.chosen.map(lambda t: len(str(t).split()))
            df["len_rejected"] = df.rejected.map(lambda t: len(str(t).split()))
            frames.append(df)
    cols = ["method", "seed", "iteration", "prompt_idx", *PAIR_COLUMNS, "chosen", "rejected"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def summarize(diag: pd.DataFrame, logs: pd.DataFrame | None = None, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per run (``method``), iteration and statistic: the mean over seeds of the per-seed means, its
    t-interval across seeds (:func:`tpo_core.study.evaluation.t_interval`; NaN with fewer than 3 seeds) and the
    number of seeds. Statistics: :data:`PAIR_COLUMNS` (``chosen_transferred`` as a share), ``distinct_2``
    of the chosen responses, ``gold_chosen_transferred`` and ``gold_chosen_online`` (the mean r* of the chosen
    responses that came from a source, and of those that did not; seeds without such pairs are left out) and, with ``logs`` (:func:`tpo_core.study.runs.training_logs`), the last logged
    ``loss`` and ``accuracy`` of the iteration. Long format: method, iteration, statistic, mean, ci_low,
    ci_high, n_seeds."""
    if diag.empty:
        return pd.DataFrame(columns=["method", "iteration", "statistic", "mean", "ci_low", "ci_high", "n_seeds"])
    keys = ["method", "seed", "iteration"]
    per_seed = diag.groupby(keys)[list(PAIR_COLUMNS)].mean()
    per_seed["chosen_transferred"] = diag.groupby(keys).chosen_transferred.mean()
    per_seed["distinct_2"] = diag.groupby(keys).chosen.agg(lambda t: distinct_n(list(t), 2))
    for origin, flag in (("transferred", True), ("online", False)):  # NaN for a seed without such pairs
        per_seed[f"gold_chosen_{origin}"] = diag[diag.chosen_transferred == flag].groupby(keys).gold_chosen.mean()
    if logs is not None and not logs.empty:
        last = logs.sort_values("step").groupby(keys)[["loss", "accuracy"]].last()
        per_seed = per_seed.join(last, how="left")
    long = per_seed.reset_index().melt(id_vars=keys, var_name="statistic", value_name="value")
    rows = []
    for (m, k, stat), g in long.groupby(["method", "iteration", "statistic"], sort=False):
        v = g.value.dropna().to_numpy(dtype=float)
        mean, lo, hi = t_interval(v, confidence) if len(v) else (np.nan, np.nan, np.nan)
        rows.append({"method": m, "iteration": k, "statistic": stat, "mean": mean, "ci_low": lo, "ci_high": hi,
                     "n_seeds": len(v)})
    return pd.DataFrame(rows)


def diagnose(study: Study, names, seeds) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chapter's tables (notebook 07): :func:`pair_diagnostics` of runs ``names`` on ``seeds`` and their
    :func:`summarize` with the training logs, the summary written to ``results/<preset>/mechanism/summary.csv``
    (every statistic the chapter's figures show). Returns ``(diag, summary)``."""
    from tpo_core.plumbing.provenance import write_csv
    from tpo_core.study.runs import training_logs

    diag = pair_diagnostics(study, names, seeds)
    summary = summarize(diag, training_logs(study, names, seeds))
    write_csv(summary, study.root / "mechanism" / "summary.csv", study.sharding)
    return diag, summary


#: Statistics that are changes or differences, written with a sign and shown against a zero line.
SIGNED = ("dlogp_chosen", "dlogp_rejected", "kl_pair", "gold_margin")


def interval_text(summary: pd.DataFrame, method: str, statistic: str, iteration: int) -> str:
    """One statistic of :func:`summarize` as the book writes it: mean and 95% interval over seeds, two decimals,
    signed for changes and differences (``"+0.29 (95% CI +0.27 to +0.31)"``)."""
    from tpo_core.study.report import with_interval

    r = summary[(summary.method == method) & (summary.statistic == statistic) & (summary.iteration == iteration)]
    if r.empty:
        raise KeyError(f"no {statistic!r} for {method!r} at iteration {iteration} in the summary")
    r = r.iloc[0]
    return with_interval(r["mean"], r.ci_low, r.ci_high, digits=2, signed=statistic.startswith(("dlogp", "kl", "gold")))


def headline(summary: pd.DataFrame, diag: pd.DataFrame, iteration: int, *, methods=("tpo", "no-transfer")) -> dict:
    """The numbers the chapter's text cites at ``iteration``, as glue names -> text: per method of ``methods``
    and the control, the change in log-probability of the chosen (``dc_<m>``) and rejected (``dr_<m>``)
    responses, the share of pairs whose chosen response lost likelihood (``down_<m>``), the last logged
    accuracy and loss; TPO's share of transferred chosen responses, and the r* of the chosen responses and the
    margins of TPO, no-transfer and the control."""
    from tpo_core.tpo.empirical import CONTROL

    cell = lambda m, stat, k=iteration: interval_text(summary, m, stat, k)  # noqa: E731
    last = diag[diag.iteration == iteration]
    out = {"last_k": str(iteration)}
    for m in (*methods, CONTROL):
        share = last[last.method == m].groupby("seed").dlogp_chosen.apply(lambda v: (v < 0).mean() * 100)
        out |= {f"dc_{m}": cell(m, "dlogp_chosen"), f"dr_{m}": cell(m, "dlogp_rejected"),
                f"down_{m}": f"{share.mean():.0f}%" if len(share) else "n/a",
                f"acc_{m}": cell(m, "accuracy"), f"loss_{m}": cell(m, "loss")}
    return out | {
        "margin_or": cell(CONTROL, "gold_margin"), "gold_or": cell(CONTROL, "gold_chosen"),
        "share_tpo": cell("tpo", "chosen_transferred", 1) + " at iteration 1, " + cell("tpo", "chosen_transferred"),
        "margin_tpo": cell("tpo", "gold_margin"), "margin_nt": cell("no-transfer", "gold_margin"),
        "gold_tr": cell("tpo", "gold_chosen_transferred"), "gold_on": cell("tpo", "gold_chosen_online"),
        "gold_nt": cell("no-transfer", "gold_chosen")}
