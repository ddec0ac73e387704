"""The tuning protocol (tpo_core.study.tuning) on the smoke preset: unreported seeds, held-out prompts, one rule."""

import numpy as np
import pandas as pd
import pytest

from tpo_core.world import presets
from tpo_core.study import tuning
from tpo_core.study import pipeline as S


def test_tuning_seeds_and_prompts_are_never_reported(tmp_path):
    for name in presets.PRESETS:
        assert not set(tuning.TUNING_SEEDS) & set(presets.get_preset(name).seeds), name
    study = S.load_study("smoke", results_root=tmp_path, with_models=False)
    assert len(study.held_out) > 0 and not set(study.held_out.document) & set(study.test.document)
    with pytest.raises(ValueError, match="reported seeds"):
        tuning.tune("smoke", [1e-3], results_root=tmp_path, seeds=[presets.get_preset("smoke").seeds[0]])
    with pytest.raises(ValueError, match="distinct positive"):
        tuning.tune("smoke", [1e-3, 1e-3], results_root=tmp_path)


def test_every_run_of_a_loss_is_tuned_but_the_ablations_of_tpos_own_settings():
    from tpo_core.tpo.empirical import CONTROL, METHODS
    from tpo_core.study.runs import RUNS

    assert tuning.TUNED_RUNS["dpo"] == tuple(METHODS)
    for loss, names in tuning.TUNED_RUNS.items():
        assert all(RUNS[n].loss == loss for n in names)
        # every run of the loss is tuned, except TPO's ablations (same loss, same rate as TPO itself) and the
        # positive control (it trains at the methods' rate by construction)
        untuned = {n for n, r in RUNS.items() if r.loss == loss} - set(names) - {CONTROL}
        assert all(RUNS[n].method == "tpo" and n.startswith("tpo-") for n in untuned), untuned
    with pytest.raises(ValueError, match="do not train with 'ipo'"):
        tuning.tune("smoke", [1e-3], loss="ipo", methods=["tpo-ipo", "tpo"])
    with pytest.raises(ValueError, match="unknown loss"):
        tuning.tune("smoke", [1e-3], loss="xpo")
    assert tuning.table_path("r", "embedded", "ipo").as_posix() == "r/tuning/embedded-ipo.csv"
    assert tuning.table_path("r", "embedded").as_posix() == "r/tuning/embedded.csv"


def test_a_run_depends_on_the_rate_of_its_own_loss_only(tmp_path):
    """Changing the IPO rate changes the IPO runs' identity and no DPO run's; the DPO rate moves an IPO run
    only while its rate is the paper's ratio of it."""
    base = S.load_study("smoke", results_root=tmp_path, with_models=False, ipo_learning_rate=None)
    ipo_set = S.load_study("smoke", results_root=tmp_path, with_models=False, ipo_learning_rate=3e-4)
    ipo_set2 = S.load_study("smoke", results_root=tmp_path, with_models=False, ipo_learning_rate=3e-4,
                            learning_rate=5e-3)
    ident = {}
    for name, st in (("base", base), ("ipo", ipo_set), ("both", ipo_set2)):
        for run in ("no-transfer", "no-transfer-ipo"):
            ident[name, run] = S.run_identity(st, run, st.preset.seeds[0])
    assert ident["base", "no-transfer"] == ident["ipo", "no-transfer"]
    assert ident["base", "no-transfer-ipo"] != ident["ipo", "no-transfer-ipo"]
    assert ident["ipo", "no-transfer-ipo"]["preset"]["learning_rate"] == 3e-4
    assert ident["base", "no-transfer-ipo"]["preset"]["learning_rate"] == pytest.approx(0.2 * base.preset.learning_rate)
    assert ident["ipo", "no-transfer-ipo"] == ident["both", "no-transfer-ipo"]  # a set IPO rate ignores the DPO one
    assert ident["ipo", "no-transfer"] != ident["both", "no-transfer"]


def test_pick_is_the_argmax_of_the_method_averaged_criterion():
    t = pd.DataFrame({"learning_rate": [1e-3] * 4 + [3e-3] * 4, "method": ["a", "a", "b", "b"] * 2,
                      "seed": [1, 2] * 4, "final_gold": [0.1, 0.3, 0.5, 0.5, 0.9, 0.9, 0.0, 0.0]})
    # lr 1e-3: (0.2 + 0.5) / 2 = 0.35; lr 3e-3: (0.9 + 0.0) / 2 = 0.45 -> each method weighs the same
    assert tuning.pick(t) == 3e-3
    assert tuning.pick(t.assign(final_gold=np.where(t.learning_rate == 3e-3, 0.3, t.final_gold))) == 1e-3


def test_tune_runs_every_method_per_value_in_its_own_tree(tmp_path, monkeypatch):
    main = S.load_study("smoke", results_root=tmp_path)
    S.measure_sources(main, n_prompts=6, seed=0)
    table = tuning.tune("smoke", [1e-3, 3e-2], results_root=tmp_path, seeds=[9001],
                        methods=["no-transfer", "exploit-best"], n_prompts=4, progress=False)
    assert list(table.columns) == ["learning_rate", "method", "seed", "final_gold"] and len(table) == 4
    assert np.isfinite(table.final_gold).all()
    import json

    for lr in (1e-3, 3e-2):
        [ident] = (tmp_path / "tuning" / f"lr_{lr:g}" / "smoke" / "runs" / "no-transfer").glob("*/seed_9001/identity.json")
        assert json.loads(ident.read_text())["preset"]["learning_rate"] == lr
    # the final policies differ by learning rate, and a rerun loads the runs instead of training
    assert table.groupby("learning_rate").final_gold.apply(tuple).nunique() == 2
    from tpo_core.tpo import trainer

    monkeypatch.setattr(trainer.PreferenceTrainer, "train_iteration",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    pd.testing.assert_frame_equal(tuning.tune("smoke", [1e-3, 3e-2], results_root=tmp_path, seeds=[9001],
                                              methods=["no-transfer", "exploit-best"], n_prompts=4, progress=False),
                                  table)


def test_tune_ipo_sets_the_ipo_rate_in_a_tree_of_its_own(tmp_path):
    """The IPO runs are tuned by the same rule, their rate in ``ipo_lr_<value>/``; the trainer really uses it."""
    import json

    from tpo_core.study import runs

    table = tuning.tune("smoke", [1e-3, 3e-2], loss="ipo", results_root=tmp_path, seeds=[9001],
                        methods=["no-transfer-ipo"], n_prompts=4, progress=False)
    assert list(table.method.unique()) == ["no-transfer-ipo"] and np.isfinite(table.final_gold).all()
    for lr in (1e-3, 3e-2):
        folder = tmp_path / "tuning" / f"ipo_lr_{lr:g}" / "smoke"
        [ident] = (folder / "runs" / "no-transfer-ipo").glob("*/seed_9001/identity.json")
        ident = json.loads(ident.read_text())
        assert ident["preset"]["learning_rate"] == lr and ident["run"]["loss"] == "ipo"
        study = S.load_study("smoke", results_root=folder.parent, with_models=False, ipo_learning_rate=lr)
        assert runs.preference_config(study.preset, runs.RUNS["no-transfer-ipo"], 9001).lr == lr
    assert not (tmp_path / "tuning" / "lr_0.001").exists()
    assert table.groupby("learning_rate").final_gold.apply(tuple).nunique() == 2
