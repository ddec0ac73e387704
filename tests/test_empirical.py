"""Per-prompt steps of empirical TPO (Alg. 3): candidate building and the win signal."""

import json
import numpy as np
import pandas as pd
import pytest

from tpo_core.tpo.empirical import build_candidates, transfer_win


def test_null_arm_keeps_online_responses():
    cands, mask = build_candidates(["a", "b", "c"], None, None, 2)
    assert cands == ["a", "b", "c"] and not mask.any()


def test_source_arm_replaces_the_first_k_with_its_best_of_n():
    online = [f"o{i}" for i in range(8)]
    pool = [f"p{i}" for i in range(6)]
    scores = [0.1, 0.9, 0.3, 0.9, 0.5, 0.0]  # tie between p1 and p3 goes to the lower index
    cands, mask = build_candidates(online, pool, scores, 4)
    assert cands == ["p1", "p3", "p4", "p2", "o4", "o5", "o6", "o7"]
    assert mask.tolist() == [True] * 4 + [False] * 4


def test_transfer_win():
    assert transfer_win([0.2, 0.9, 0.1], [True, True, False]) == 1.0
    assert transfer_win([0.2, 0.1, 0.9], [True, True, False]) == 0.0
    assert transfer_win([0.5, 0.5], [False, True]) == 0.0  # ties: first index, as argmax


def test_win_is_one_half_in_expectation_when_groups_are_exchangeable():
    """Both groups from the same policy: P(best is transferred) = k / n_candidates = 1/2 for k = 4 of 8."""
    rng = np.random.default_rng(0)
    mask = np.arange(8) < 4
    wins = [transfer_win(rng.normal(size=8), mask) for _ in range(4000)]
    assert np.mean(wins) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("call, match", [
    (lambda: build_candidates(["a"], None, None, 1), "at least 2"),
    (lambda: build_candidates(["a", "b"], ["p"], [0.1, 0.2], 1), "one score per pool"),
    (lambda: build_candidates(["a", "b"], ["p", "q"], [0.1, 0.2], 2), "k must"),
    (lambda: transfer_win([0.1, 0.2], [True]), "equal-length"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------- the collection loop
import torch  # noqa: E402

from tpo_core.tpo.empirical import collect_iteration  # noqa: E402
from tpo_core.tpo.selection import TransferSelector  # noqa: E402


class FakePolicy:
    """Responses 'doc:<k>' with k drawn from each document's own generator, as the real Policy.sample."""

    def __init__(self):
        self.calls = []

    def sample(self, documents, n, *, temperature, max_new_tokens, generator):
        self.calls.append((len(documents), n))
        assert len(generator) == len(documents)  # one stream per prompt (common random numbers)
        ks = [torch.randint(0, 100, (n,), generator=g).tolist() for g in generator]
        return [[f"{d}:{k}" for k in row] for d, row in zip(documents, ks)]


class NumberSource:
    """Scores a response by its number (higher is better), recording what it was asked."""

    def __init__(self, sign=1.0):
        self.sign, self.seen = sign, 0

    def score(self, prompts, responses, references):
        assert len(prompts) == len(responses) == len(references)
        self.seen += len(responses)
        return np.array([self.sign * float(r.split(":")[1]) for r in responses])


def _run(selector, sources, seed=0, n_docs=12):
    docs = [f"d{i}" for i in range(n_docs)]
    return collect_iteration(FakePolicy(), docs, [f"ref{i}" for i in range(n_docs)], selector=selector,
                             sources=sources, gold=NumberSource(), n_candidates=8, pool_size=6,
                             top_k=4, seed=seed, progress=False)


def test_collection_with_a_perfect_source_wins_and_labels_best_vs_worst():
    good = NumberSource(+1.0)
    sel = TransferSelector(["good", "null"], policy="fixed:good")
    pairs, rec = _run(sel, {"good": good}, n_docs=300)
    assert len(rec) == 300 and (rec.arm == "good").all()
    assert good.seen == 300 * 6  # only the pools of the prompts that chose it
    for p in pairs:
        assert int(p["chosen"].split(":")[1]) >= int(p["rejected"].split(":")[1])
    # the best of 6 pool samples beats the best of the 4 remaining online ones with probability 6/10
    # (i.i.d. draws; ties, which go to the source, add a little)
    assert 0.53 < rec.win.mean() < 0.69


def test_each_arm_scores_only_its_own_prompts_and_null_scores_nothing():
    a, b = NumberSource(), NumberSource(-1.0)
    sel = TransferSelector(["a", "b", "null"], policy="uniform", seed=3, update_every=4)
    _, rec = _run(sel, {"a": a, "b": b})
    assert a.seen == 6 * (rec.arm == "a").sum() and b.seen == 6 * (rec.arm == "b").sum()
    assert (rec.loc[rec.arm == "null", "win"] == 0).all()  # nothing transferred, nothing won
    assert sel.stats().set_index("arm").loc["a", "pulls"] == (rec.arm == "a").sum()


def test_collection_is_deterministic_for_a_seed():
    runs = [_run(TransferSelector(["a", "null"], seed=1, update_every=3), {"a": NumberSource()}, seed=5)
            for _ in range(2)]
    assert runs[0][0] == runs[1][0]
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1])
    other = _run(TransferSelector(["a", "null"], seed=1, update_every=3), {"a": NumberSource()}, seed=6)
    assert other[0] != runs[0][0]


def test_an_arm_without_a_source_is_an_error():
    with pytest.raises(ValueError, match="no source"):
        _run(TransferSelector(["a", "null"]), {})


# ---------------------------------------------------------------------------- a whole method, tiny
from tpo_core.world.data import load_debian  # noqa: E402
from tpo_core.tpo.empirical import make_selector  # noqa: E402
from tpo_core.study.run_loop import run_method  # noqa: E402
from tpo_core.world.presets import get_preset  # noqa: E402


class LengthGold:
    """A stand-in human that prefers responses of about 5 words."""

    def score(self, prompts, responses, references):
        return -np.abs(np.array([len(r.split()) for r in responses]) - 5.0)


@pytest.fixture(scope="module")
def smoke_setup(tmp_path_factory):
    from tpo_core.world import policy_config as P
    from tpo_core.world import sft as F
    from tpo_core.world.sources import make_source

    df = load_debian("sft").iloc[:64]
    pol = F.train_sft(P.SMOKE, df, cache_dir=tmp_path_factory.mktemp("pi0"), progress=False)
    return pol, df, {"rougeLsum": make_source("rougeLsum")}


def _trainer(pol):
    from tpo_core.tpo.trainer import PreferenceConfig, PreferenceTrainer

    cfg = PreferenceConfig(epochs=1, batch_size=2, grad_accum=1, warmup_steps=0, lr=1e-3, progress=False)
    return PreferenceTrainer(pol.model, pol.encode, cfg)


def test_run_method_end_to_end_and_resume(smoke_setup, tmp_path, monkeypatch):
    import copy

    pol, df, sources = smoke_setup
    pol = copy.deepcopy(pol)
    preset = get_preset("smoke")
    kw = dict(preset=preset, prompts_df=df, sources=sources, gold=LengthGold(), seed=0, progress=False)
    out = run_method("tpo", pol, _trainer(pol), out_dir=tmp_path, **kw)
    arms = out["arms"]
    assert set(arms.iteration) == set(range(1, preset.n_iterations + 1))
    assert (arms.groupby("iteration").pulls.sum() == preset.prompts_per_iteration).all()
    assert (tmp_path / f"iter_{preset.n_iterations}").is_dir()
    assert len(out["logs"]) > 0 and np.isfinite(out["logs"].loss).all()

    # a rerun finds every iteration finished: nothing is collected or trained again
    def boom(*a, **k):
        raise AssertionError("a finished iteration was redone")

    timings = [(tmp_path / f"timing_iter_{k}.json").read_text() for k in range(1, preset.n_iterations + 1)]
    assert all(json.loads(t)["seconds"] > 0 for t in timings)  # each computed iteration records its seconds
    monkeypatch.setattr("tpo_core.tpo.empirical.collect_iteration", boom)
    again = run_method("tpo", pol, _trainer(pol), out_dir=tmp_path, **kw)
    pd.testing.assert_frame_equal(again["arms"], arms)
    assert [(tmp_path / f"timing_iter_{k}.json").read_text() for k in range(1, preset.n_iterations + 1)] == timings


def test_baselines_pull_their_fixed_arm():
    preset = get_preset("smoke")
    assert make_selector("no-transfer", ["rougeLsum"], preset).select() == "online"
    assert make_selector("exploit-best", ["a", "b"], preset, best="b").select() == "b"
    with pytest.raises(ValueError, match="unknown method"):
        make_selector("nope", ["a"], preset)
    with pytest.raises(ValueError, match="needs a source arm"):
        make_selector("exploit-worst", ["a"], preset)


def test_methods_holding_the_same_policy_draw_the_same_online_responses():
    """Common random numbers: a prompt's online responses depend on (seed, its index) and the policy only,
    not on the method's arms or on the other prompts of the iteration."""
    docs = [f"doc {i}" for i in range(12)]
    online = {}
    for name, arm, n in (("no-transfer", "null", 12), ("exploit", "a", 12), ("half", "null", 6)):
        pol = FakePolicy()
        seen = []
        real = pol.sample
        pol.sample = lambda d, k, **kw: seen.append(real(d, k, **kw)) or seen[-1]  # noqa: B023
        sel = TransferSelector(["a", "null"], policy=f"fixed:{arm}", update_every=4)
        collect_iteration(pol, docs[:n], docs[:n], selector=sel, sources={"a": NumberSource()}, gold=NumberSource(),
                          n_candidates=4, pool_size=6, top_k=2, seed=5, progress=False)
        online[name] = seen[0]  # the first call draws every prompt's online responses
    assert online["no-transfer"] == online["exploit"]
    assert online["half"] == online["no-transfer"][:6]
