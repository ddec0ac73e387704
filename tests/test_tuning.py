"""The tuning protocol (tpo_core.tuning) on the smoke preset: unreported seeds, held-out prompts, one rule."""

import numpy as np
import pandas as pd
import pytest

from tpo_core import presets, tuning
from tpo_core import study as S


def test_tuning_seeds_and_prompts_are_never_reported(tmp_path):
    for name in presets.PRESETS:
        assert not set(tuning.TUNING_SEEDS) & set(presets.get_preset(name).seeds), name
    study = S.load_study("smoke", results_root=tmp_path, with_models=False)
    assert len(study.held_out) > 0 and not set(study.held_out.document) & set(study.test.document)
    with pytest.raises(ValueError, match="reported seeds"):
        tuning.tune("smoke", [1e-3], results_root=tmp_path, seeds=[presets.get_preset("smoke").seeds[0]])
    with pytest.raises(ValueError, match="distinct positive"):
        tuning.tune("smoke", [1e-3, 1e-3], results_root=tmp_path)


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
        ident = tmp_path / "tuning" / f"lr_{lr:g}" / "smoke" / "runs" / "no-transfer" / "seed_9001" / "identity.json"
        assert json.loads(ident.read_text())["preset"]["learning_rate"] == lr
    # the final policies differ by learning rate, and a rerun loads the runs instead of training
    assert table.groupby("learning_rate").final_gold.apply(tuple).nunique() == 2
    from tpo_core import trainer

    monkeypatch.setattr(trainer.PreferenceTrainer, "train_iteration",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    pd.testing.assert_frame_equal(tuning.tune("smoke", [1e-3, 3e-2], results_root=tmp_path, seeds=[9001],
                                              methods=["no-transfer", "exploit-best"], n_prompts=4, progress=False),
                                  table)
