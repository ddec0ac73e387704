"""The pilot (tpo_core.study.pilot): unreported seeds and prompts, exact reuse, the noise split and the design pick."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from tpo_core.study import pilot as PL
from tpo_core.study import power
from tpo_core.world import presets
from tpo_core.study import tuning
from tpo_core.study import pipeline as S

SETTINGS = {"preset": {}, "prompts_4": {"prompts_per_iteration": 4}}


def test_pilot_seeds_are_neither_reported_nor_tuning_seeds(tmp_path):
    for name in presets.PRESETS:
        assert not set(PL.PILOT_SEEDS) & set(presets.get_preset(name).seeds), name
    assert not set(PL.PILOT_SEEDS) & set(tuning.TUNING_SEEDS)
    with pytest.raises(ValueError, match="reported or tuning"):
        PL.pilot("smoke", SETTINGS, results_root=tmp_path, seeds=[presets.get_preset("smoke").seeds[0], 9101])
    with pytest.raises(ValueError, match="reported or tuning"):
        PL.pilot("smoke", SETTINGS, results_root=tmp_path, seeds=[tuning.TUNING_SEEDS[0], 9101])
    with pytest.raises(ValueError, match="at least 2 distinct"):
        PL.pilot("smoke", SETTINGS, results_root=tmp_path, seeds=[9101, 9101])


@pytest.mark.parametrize("settings, match", [
    ({}, "non-empty"), ({"Bad-Label": {}}, "lower-case"), ({"ok": [1]}, "must be a dict"),
    ({"ok": {"seeds": (1, 2)}}, "may not set"), ({"ok": {"eval_samples": 4}}, "may not set")])
def test_bad_settings_fail_before_any_compute(tmp_path, settings, match):
    with pytest.raises(ValueError, match=match):
        PL.pilot("smoke", settings, results_root=tmp_path)


def test_on_held_out_never_touches_the_reported_test_prompts(tmp_path):
    study = S.load_study("smoke", results_root=tmp_path, with_models=False)
    held = PL.on_held_out(study, 5)
    assert len(held.test) == min(5, len(study.held_out))
    assert not set(held.test.document) & set(study.test.document)
    assert held.data_identity["test"] != study.data_identity["test"]
    assert held.data_identity["online"] == study.data_identity["online"]


def test_sd_interval_is_the_chi_square_interval():
    lo, hi = PL.sd_interval(2.0, 5)
    # df = 4: chi2 quantiles 11.1433 (0.975) and 0.48442 (0.025)
    assert lo == pytest.approx(2.0 * math.sqrt(4 / 11.1433), rel=1e-4)
    assert hi == pytest.approx(2.0 * math.sqrt(4 / 0.48442), rel=1e-4)
    assert lo < 2.0 < hi and hi / lo > 4  # five seeds: a factor of about two either way
    lo50, hi50 = PL.sd_interval(2.0, 50)
    assert lo < lo50 < 2.0 < hi50 < hi
    # coverage: the interval holds the true sd in ~95% of normal samples of 5
    rng = np.random.default_rng(0)
    sds = rng.normal(0, 3.0, size=(4000, 5)).std(axis=1, ddof=1)
    cover = np.mean([lo <= 3.0 <= hi for lo, hi in (PL.sd_interval(s, 5) for s in sds)])
    assert abs(cover - 0.95) < 0.015
    assert all(math.isnan(v) for v in PL.sd_interval(2.0, 1))


def test_summarize_is_the_variance_split_in_points():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=(5, 40)) / 2
    x = x if x.mean() > 0.5 else 1 - x  # a control that gains (1 - x: the same outcomes seen from no-transfer)
    runs = pd.DataFrame({"setting": "a", "method": ["exploit-oracle", "no-transfer"] * 5, "seed": np.repeat(np.arange(5), 2),
                         "seconds": [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 100], "final_gold": np.tile([0.3, 0.1], 5)})
    row = PL.summarize(runs, {"a": x}).iloc[0]
    split = power.variance_split(x)
    for k in ("sd_between", "sd_eval", "sd_train"):
        assert row[k] == pytest.approx(100 * split[k])
    assert row.win_rate == pytest.approx(100 * x.mean()) and row.effect == pytest.approx(100 * x.mean() - 50)
    assert row.effect > 0
    assert (row.gold_control, row.gold_no_transfer) == pytest.approx((0.3, 0.1))
    assert row.seconds_per_seed == 9.0  # the median of the per-seed sums 1, 5, 9, 13, 108: one slowed seed moves nothing
    assert row.seconds_control == 4.0  # the oracle's runs alone: 0, 2, 4, 6, 8
    # the seeds that detect the control's effect at the (floored) sd, and what they cost
    sd = max(row.sd_between, row.sd_eval)
    assert row.seeds_to_detect == power.seeds_needed(sd, row.effect)
    assert power.mde(sd, int(row.seeds_to_detect)) <= row.effect < power.mde(sd, int(row.seeds_to_detect) - 1)
    assert row.minutes_to_detect == pytest.approx(row.seeds_to_detect * 9.0 / 60)
    # an oracle that hurts is no positive control: its effect is negative and shows nothing to detect
    both = PL.summarize(pd.concat([runs.assign(setting="hurt"), runs]), {"hurt": 1 - x, "a": x})
    hurt = both.iloc[0]
    assert hurt.effect == pytest.approx(-row.effect) and hurt.sd_between == pytest.approx(row.sd_between)
    assert math.isnan(hurt.seeds_to_detect) and math.isnan(hurt.minutes_to_detect)
    assert PL.pick_by_effect(both).setting == "a"
    nan = PL.summarize(runs.assign(seconds=np.where(runs.index == 3, np.nan, runs.seconds)), {"a": x}).iloc[0]
    assert math.isnan(nan.seconds_per_seed)  # a seed without a timing leaves the setting unpriced


def _summary(**kw):
    base = {"setting": "a", "win_rate": 50.0, "sd_between": 5.0, "sd_eval": 3.0, "sd_train": 4.0, "n_seeds": 5,
            "n_prompts": 100, "sd_between_low": 3.0, "sd_between_high": 14.0, "seconds_per_seed": 200.0,
            "seconds_control": 120.0}
    return {**base, **kw}


def test_designs_price_each_setting_and_choose_the_smallest_mde_that_fits():
    summary = pd.DataFrame([_summary(), _summary(setting="b", sd_train=1.0, seconds_per_seed=400.0),
                            _summary(setting="c", seconds_per_seed=float("nan")),
                            _summary(setting="d", sd_between=0.0, sd_eval=0.0, sd_train=0.0)])
    table = PL.designs(summary, n_prompts=100, samples=2, seconds_fixed=600.0, seconds_per_response=0.05,
                       control_seeds=6, secondary_seeds=4, checkpoints_fixed=30, seeds_grid=(5, 10),
                       prompts_grid=(200,), samples_grid=(1, 2))
    assert set(table.setting) == {"a", "b"}  # c has no timing, d no spread (not a noiseless setting)
    one = table[(table.setting == "a") & (table.n_seeds == 10) & (table.eval_samples == 1)].iloc[0]
    # the primary pair on every seed at the pilot's two runs (200 s) and its 2 last checkpoints judged; fixed:
    # the oracle on 6 seeds (120 s a run), the two exploit baselines on 4 (each at the mean of the pilot's two
    # runs, 100 s) and 30 other checkpoints, every checkpoint judged on 200 prompts x 1 sample
    assert one.minutes == pytest.approx((600 + 6 * 120 + 4 * 2 * 100 + 10 * 200 + (10 * 2 + 30) * 200 * 0.05) / 60)
    two = table[(table.setting == "a") & (table.n_seeds == 10) & (table.eval_samples == 2)].iloc[0]
    assert two.minutes - one.minutes == pytest.approx((10 * 2 + 30) * 200 * 0.05 / 60)  # every judgment doubles
    assert one.sd_between == pytest.approx(math.sqrt(16 + 9 * 100 * 2 / 200))
    pick = PL.choose(table, 60.0)
    fits = table[table.minutes <= 60]
    assert pick.mde == fits.mde.min() and pick.minutes <= 60
    assert PL.choose(table, 1.0) is None
    with pytest.raises(ValueError, match="no setting has both timings"):
        PL.designs(summary.iloc[2:], n_prompts=100, samples=2, seconds_fixed=0.0, seconds_per_response=0.05)


def test_pilot_on_smoke_runs_times_reuses_and_matches_a_recomputation(tmp_path, monkeypatch):
    S.measure_sources(S.load_study("smoke", results_root=tmp_path), n_prompts=6, seed=0)
    runs, outcomes = PL.pilot("smoke", SETTINGS, results_root=tmp_path, seeds=[9101, 9102], n_prompts=4,
                              eval_samples=2, progress=False)
    assert list(runs.columns) == ["setting", "method", "seed", "seconds", "final_gold"] and len(runs) == 8
    assert (runs.seconds > 0).all() and np.isfinite(runs.final_gold).all()
    assert set(outcomes) == set(SETTINGS) and all(x.shape == (2, 4) for x in outcomes.values())
    [ident] = (tmp_path / "pilot" / "prompts_4" / "smoke" / "runs" / "exploit-oracle").glob("*/seed_9101/identity.json")
    ident = json.loads(ident.read_text())
    assert ident["preset"]["prompts_per_iteration"] == 4 and ident["seed"] == 9101
    # the cached evaluation is what a fresh evaluation of the final checkpoint gives
    study = PL.on_held_out(S.load_study("smoke", results_root=tmp_path / "pilot" / "preset", sources="arms",
                                        seeds=(9101, 9102), eval_samples=2), 4)
    from tpo_core.study.checkpoints import load_checkpoint

    pol = study.new_pi0()
    load_checkpoint(pol.model, S.run_dir(study, "no-transfer", 9102) / f"iter_{study.preset.n_iterations}")
    fresh = S.gold_on_prompts(study, pol, 30_000 + 9102)
    np.testing.assert_array_equal(PL.final_gold_matrix(study, "no-transfer", 9102), fresh)
    # a rerun trains and judges nothing, and reports the recorded seconds
    from tpo_core.tpo import trainer

    monkeypatch.setattr(trainer.PreferenceTrainer, "train_iteration",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    monkeypatch.setattr(PL, "gold_on_prompts", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-judged")))
    again, outcomes2 = PL.pilot("smoke", SETTINGS, results_root=tmp_path, seeds=[9101, 9102], n_prompts=4,
                                eval_samples=2, progress=False)
    pd.testing.assert_frame_equal(again, runs)
    for k in outcomes:
        np.testing.assert_array_equal(outcomes2[k], outcomes[k])


def test_pick_by_effect_takes_the_fewest_minutes_to_detect_the_control():
    summary = pd.DataFrame([_summary(setting="quiet_no_effect", effect=0.0, minutes_to_detect=float("nan")),
                            _summary(setting="big_slow", effect=20.0, minutes_to_detect=30.0),
                            _summary(setting="small_fast", effect=5.0, minutes_to_detect=12.0),
                            _summary(setting="tie_bigger", effect=8.0, minutes_to_detect=12.0)])
    assert PL.pick_by_effect(summary).setting == "tie_bigger"  # a setting without effect is never picked
    assert PL.pick_by_effect(summary.iloc[:1]) is None


def test_only_settings_whose_sd_intervals_separate_are_distinguishable():
    summary = pd.DataFrame([_summary(setting="preset"),  # interval 3-14
                            _summary(setting="close", sd_between=4.0, sd_train=3.0, sd_between_low=2.5, sd_between_high=11.0),
                            _summary(setting="quiet", sd_between=1.0, sd_train=0.5, sd_eval=0.8, sd_between_low=0.6,
                                     sd_between_high=2.9),
                            _summary(setting="loud", sd_between=30.0, sd_between_low=18.0, sd_between_high=80.0),
                            _summary(setting="flat", sd_between=0.0, sd_between_low=0.0, sd_between_high=0.0)])
    assert PL.distinguishable(summary) == ["quiet", "loud"]
    with pytest.raises(ValueError, match="no setting 'nope'"):
        PL.distinguishable(summary, "nope")
    table = PL.designs(summary.iloc[:3], n_prompts=100, samples=2, seconds_fixed=0.0, seconds_per_response=0.05,
                       seeds_grid=(5,), prompts_grid=(200,), samples_grid=(1,))
    assert PL.choose(table, 1e9).setting == "quiet"  # the smallest point estimate
    assert PL.choose(table, 1e9, settings=["preset", "close"]).setting == "close"
    assert PL.choose(table, 1e9, settings=["preset"]).setting == "preset"


def test_the_default_budget_follows_the_cpu(monkeypatch):
    """The default run's budgets: an hour where the CPU computes bf16 natively, two hours on AVX2-only cores."""
    from tpo_core.world import oracle

    assert (PL.default_budget(True), PL.default_budget(False)) == (60.0, 120.0)
    for native in (True, False):
        monkeypatch.setattr(oracle, "native_bf16", lambda native=native: native)
        assert PL.default_budget() == PL.default_budget(native)
