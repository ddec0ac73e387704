"""The mechanism diagnostics (tpo_core.study.mechanism) on the smoke study: closed forms, recomputation, caching."""

import numpy as np
import pandas as pd
import pytest

from tpo_core.study import mechanism as M
from tpo_core.study import pipeline as S


def test_distinct_n_closed_forms():
    assert M.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert M.distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert M.distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)  # pooled over texts
    assert M.distinct_n(["x y z"], 3) == 1.0 and np.isnan(M.distinct_n(["x", ""], 2))
    with pytest.raises(TypeError):
        M.distinct_n("a b", 2)
    with pytest.raises(ValueError):
        M.distinct_n(["a b"], 0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    study = S.load_study("smoke", results_root=tmp_path_factory.mktemp("results"))
    S.measure_sources(study, n_prompts=6, seed=0)
    S.run_all(study, ["no-transfer", "exploit-best"], progress=False)
    return study


def test_pair_diagnostics_recompute_the_policies(trained, monkeypatch):
    study, p = trained, trained.preset
    diag = M.pair_diagnostics(study, ["no-transfer", "exploit-best"])
    assert set(diag.method) == {"no-transfer", "exploit-best"} and set(diag.seed) == set(p.seeds)
    assert set(diag.iteration) == set(range(1, p.n_iterations + 1))
    rec = S.records(study, ["no-transfer", "exploit-best"])
    assert len(diag) == int(rec.kept.sum())  # one row per kept (not tied) prompt: one preference pair each
    assert not diag.chosen_transferred[diag.method == "no-transfer"].any()
    assert (diag.gold_margin > 0).all()  # best minus worst of a kept prompt
    # the pair's log-probabilities before iteration 1 are pi_0's, recomputed here directly
    first = diag[(diag.method == "no-transfer") & (diag.seed == p.seeds[0]) & (diag.iteration == 1)]
    from tpo_core.study.run_loop import iteration_prompts

    docs, _ = iteration_prompts(p, study.online, p.seeds[0], 1)
    c, r = M.pair_logprobs(study.new_pi0(), [docs[i] for i in first.prompt_idx], list(first.chosen),
                           list(first.rejected))
    np.testing.assert_allclose(first.logp_chosen_before, c, rtol=1e-6)
    np.testing.assert_allclose(first.logp_rejected_before, r, rtol=1e-6)
    # DPO raises the log-likelihood ratio margin of the pairs it trained on
    assert (diag.dlogp_chosen - diag.dlogp_rejected).mean() > 0
    np.testing.assert_allclose(diag.kl_pair, 0.5 * (diag.dlogp_chosen + diag.dlogp_rejected))

    # cached: a second call computes no log-probability and returns the same table
    monkeypatch.setattr(M, "pair_logprobs", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    pd.testing.assert_frame_equal(M.pair_diagnostics(study, ["no-transfer", "exploit-best"]), diag)
    # a cache row for another checkpoint is not served
    key = S.run_key(study, "no-transfer")
    path = study.root / "mechanism" / "no-transfer" / key / f"seed_{p.seeds[0]}.csv"
    stale = pd.read_csv(path)
    stale["after"] = "0" * 16
    stale.to_csv(path, index=False)
    with pytest.raises(AssertionError, match="recomputed"):
        M.pair_diagnostics(study, ["no-transfer"])


def test_summarize_means_over_seeds(trained):
    diag = M.pair_diagnostics(trained, ["no-transfer", "exploit-best"])
    logs = S.training_logs(trained, ["no-transfer", "exploit-best"])
    summ = M.summarize(diag, logs)
    assert set(summ.statistic) == set(M.PAIR_COLUMNS) | {"distinct_2", "loss", "accuracy", "gold_chosen_transferred",
                                                           "gold_chosen_online"}
    by_origin = summ.statistic.isin(["gold_chosen_transferred", "gold_chosen_online"])  # only seeds with such pairs
    assert (summ[~by_origin].n_seeds == len(trained.preset.seeds)).all()
    assert summ.ci_low.isna().all()  # 2 smoke seeds: no interval
    one = summ[(summ.method == "exploit-best") & (summ.iteration == 1) & (summ.statistic == "gold_margin")]
    d = diag[(diag.method == "exploit-best") & (diag.iteration == 1)]
    assert one["mean"].item() == pytest.approx(d.groupby("seed").gold_margin.mean().mean())
    # no-transfer never transfers: no seed has a transferred chosen response, and its online ones are all of them
    nt = summ[(summ.method == "no-transfer") & (summ.iteration == 1)].set_index("statistic")
    assert nt.loc["gold_chosen_transferred", "n_seeds"] == 0 and np.isnan(nt.loc["gold_chosen_transferred", "mean"])
    assert nt.loc["gold_chosen_online", "mean"] == pytest.approx(nt.loc["gold_chosen", "mean"])


def test_summarize_splits_the_chosen_by_origin():
    """r* of the chosen responses by origin: per seed among that seed's pairs of that origin, then over seeds."""
    diag = pd.DataFrame({"method": "tpo", "iteration": 1, "seed": [1, 1, 1, 2, 2],
                         "chosen_transferred": [True, False, False, True, True],
                         "gold_chosen": [0.9, 0.2, 0.4, 0.5, 0.7], "chosen": ["a b", "c d", "e f", "g h", "i j"]})
    for col in set(M.PAIR_COLUMNS) - set(diag):
        diag[col] = 0.0
    summ = M.summarize(diag).set_index("statistic")
    assert summ.loc["gold_chosen_transferred", "mean"] == pytest.approx((0.9 + 0.6) / 2)
    assert summ.loc["gold_chosen_transferred", "n_seeds"] == 2
    assert summ.loc["gold_chosen_online", "mean"] == pytest.approx(0.3)  # seed 2 has no online chosen
    assert summ.loc["gold_chosen_online", "n_seeds"] == 1
    assert summ.loc["chosen_transferred", "mean"] == pytest.approx((1 / 3 + 1) / 2)
