"""tpo_core.study.table1.declared_table: the analysis declared before the data (one primary contrast, the positive
control, the secondary cells), each role its own Holm family, each comparison on the seeds its runs have."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tpo_core.study import power
from tpo_core.study.evaluation import pairwise_outcomes
from tpo_core.world.presets import get_preset
from tpo_core.study.table1 import PRIMARY, declared_table

SEEDS = (1, 2, 3, 4, 5, 6)


def _evals(rng, shift: dict, n_prompts=40, n_samples=2, iterations=3, seeds=SEEDS):
    out = {}
    for name, d in shift.items():
        rows = [(s, k, p, m, rng.normal(0.3 + d * k, 0.1)) for s in seeds for k in range(1, iterations + 1)
                for p in range(n_prompts) for m in range(n_samples)]
        out[name] = pd.DataFrame(rows, columns=["seed", "iteration", "prompt", "sample", "gold"])
    return out


def _study(secondary=4, control=None):
    return SimpleNamespace(preset=get_preset("smoke", seeds=SEEDS, secondary_seeds=secondary, control_seeds=control,
                                             n_iterations=3))


def test_roles_seeds_and_holm_families():
    rng = np.random.default_rng(0)
    evals = _evals(rng, {"tpo": 0.0, "no-transfer": 0.0, "exploit-worst": 0.0, "exploit-best": 0.0,
                         "exploit-oracle": 0.03})
    t = declared_table(_study(), evals, n_boot=50)
    assert list(t.role.drop_duplicates()) == ["primary", "control", "secondary"]
    primary = t[t.role == "primary"]
    assert len(primary) == 1 and tuple(primary[["method", "baseline"]].iloc[0]) == PRIMARY
    assert primary.iteration.iloc[0] == 3 and primary.n_seeds.iloc[0] == len(SEEDS)
    # one primary test: no correction, and the MDE at level 5%
    assert primary.p_holm.iloc[0] == pytest.approx(primary.p_value.iloc[0])
    assert primary.mde.iloc[0] == pytest.approx(power.mde(primary.sd_used.iloc[0], len(SEEDS)))
    control = t[t.role == "control"]
    assert list(control.iteration) == [1, 2, 3] and set(control.method) == {"exploit-oracle"}
    assert list(control.n_seeds) == [4, 4, len(SEEDS)]  # the last iteration on every seed, the earlier on 4
    _, adj = power.holm(control.p_value.to_numpy())
    np.testing.assert_allclose(control.p_holm, adj)
    sec = t[t.role == "secondary"]
    assert len(sec) == 2 + 3 + 3  # no-transfer at iterations 1-2, each exploit baseline at 1-3
    assert set(sec.n_seeds) == {4}  # secondary cells: the secondary seeds only
    _, adj = power.holm(sec.p_value.to_numpy())
    np.testing.assert_allclose(sec.p_holm, adj)
    # the oracle's shift shows as an oracle win in its own family's verdicts
    assert control.iteration.iloc[-1] == 3 and control.verdict.iloc[-1] == "exploit-oracle wins"


def test_control_on_its_own_seeds():
    """``control_seeds``: the oracle ran on the first 5 seeds only; its cells pair it with no-transfer on those
    (the earlier iterations on the secondary seeds among them), and the primary contrast keeps every seed."""
    rng = np.random.default_rng(2)
    evals = _evals(rng, {"tpo": 0.0, "no-transfer": 0.0, "exploit-worst": 0.0, "exploit-best": 0.0})
    evals.update(_evals(rng, {"exploit-oracle": 0.03}, seeds=SEEDS[:5]))
    t = declared_table(_study(secondary=4, control=5), evals, n_boot=50)
    control = t[t.role == "control"]
    assert list(control.n_seeds) == [4, 4, 5]
    assert t[t.role == "primary"].n_seeds.iloc[0] == len(SEEDS)
    with pytest.raises(ValueError, match="no evaluation for seed 6"):  # an oracle asked for a seed it lacks
        declared_table(_study(secondary=4, control=None), evals, n_boot=50)
    with pytest.raises(ValueError, match="control_seeds"):
        _study(control=0)


def test_primary_cell_is_the_t_test_of_the_per_seed_win_rates():
    rng = np.random.default_rng(1)
    evals = _evals(rng, {"tpo": 0.01, "no-transfer": 0.0})
    t = declared_table(_study(), evals, n_boot=50)
    assert set(t.role) == {"primary", "secondary"}  # no oracle run: no control rows, no exploit rows
    r = t[t.role == "primary"].iloc[0]
    mat = lambda n: np.stack([evals[n][(evals[n].iteration == 3) & (evals[n].seed == s)].sort_values(  # noqa: E731
        ["prompt", "sample"]).gold.to_numpy().reshape(40, 2) for s in SEEDS])
    per_seed = pairwise_outcomes(mat("tpo"), mat("no-transfer")).mean(axis=1)
    assert r.win_rate_mean == pytest.approx(100 * per_seed.mean())
    sd = max(per_seed.std(ddof=1), power.variance_split(pairwise_outcomes(mat("tpo"), mat("no-transfer")))["sd_eval"])
    se = sd / np.sqrt(len(SEEDS))
    assert r.p_value == pytest.approx(2 * stats.t.sf(abs(per_seed.mean() - 0.5) / se, len(SEEDS) - 1))
    assert (r.ci_high - r.ci_low) / 2 == pytest.approx(100 * stats.t.ppf(0.975, len(SEEDS) - 1) * se)
    assert r.tie_rate == 0.0


def test_judged_checkpoints_follow_the_design(monkeypatch):
    """Every iteration is judged on the secondary seeds, the last elsewhere: with 6 seeds, 4 secondary, the
    control on 5 and 3 iterations, TPO and no-transfer judge 4·3 + 2, the oracle 4·3 + 1, the exploit runs 4·3;
    and they are exactly the (seed, iteration) cells that ``declared_table`` reads."""
    from tpo_core.study import table1
    from tpo_core.study.table1 import judged_checkpoints

    study = _study(secondary=4, control=5)
    names = ["tpo", "no-transfer", "exploit-oracle", "exploit-worst", "exploit-best"]
    assert judged_checkpoints(study, names) == {"tpo": 14, "no-transfer": 14, "exploit-oracle": 13,
                                                 "exploit-worst": 12, "exploit-best": 12}
    evals = _evals(np.random.default_rng(3), {n: 0.0 for n in names})
    name_of, read = {id(df): n for n, df in evals.items()}, {n: set() for n in names}
    matrix = table1._matrix

    def spy(df, iteration, seeds):  # records the (seed, iteration) cells of each run the table reads
        read[name_of[id(df)]] |= {(s, iteration) for s in seeds}
        return matrix(df, iteration, seeds)
    monkeypatch.setattr(table1, "_matrix", spy)
    declared_table(study, evals, n_boot=10)
    assert {n: len(c) for n, c in read.items()} == judged_checkpoints(study, names)
    # what does not grow with the primary pair's seeds: all 65 but its 2 x 6 last checkpoints, and pi_0
    assert table1.fixed_checkpoints(study) == 65 - 12 + 1
