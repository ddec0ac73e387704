"""The study pipeline end to end on the smoke preset, and the paper preset's wiring with tiny stand-ins."""

import numpy as np
import pandas as pd
import pytest

from tpo_core.study import pipeline as S
from tpo_core.world.presets import get_preset
from tpo_core.study.report import cpu_flags


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return S.load_study("smoke", results_root=root)


def test_load_study_smoke(smoke):
    assert set(smoke.sources) == {"rougeLsum", "bertscore"}
    assert len(smoke.test) == smoke.preset.n_test_prompts
    # the test prompts are a fixed draw: loading twice gives the same prompts
    again = S.load_study("smoke", results_root=smoke.root.parent, with_models=False)
    assert list(again.test.document) == list(smoke.test.document)
    assert smoke.pi0_dir.is_dir() and smoke.pi0_manifest["config"]["name"] == "smoke"


def test_gold_autocast_flag_reaches_the_human(tmp_path, monkeypatch):
    assert S.build_gold(get_preset("smoke", gold_autocast_bf16=True)).autocast_bf16
    assert not S.build_gold(get_preset("smoke", gold_autocast_bf16=False)).autocast_bf16
    assert get_preset("embedded").gold_autocast_bf16 == "auto"  # the hour budget relies on it
    import torch

    from tpo_core.world import oracle
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for native in (False, True):
        for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, f, lambda native=native: native)
        assert oracle.native_bf16() is native
        assert S.build_gold(get_preset("smoke", gold_autocast_bf16="auto")).autocast_bf16 is native
    with pytest.raises(ValueError, match="gold_autocast_bf16"):
        get_preset("smoke", gold_autocast_bf16="yes")


def test_bad_input_fails_before_compute(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        S.load_study("nope", results_root=tmp_path)
    with pytest.raises(ValueError, match="unknown preset fields"):
        S.load_study("smoke", results_root=tmp_path, not_a_field=1)
    with pytest.raises(ValueError, match="unknown run"):
        S.run_all(None, ["tpo", "nope"])
    with pytest.raises(ValueError, match="unknown source"):
        S.build_sources(get_preset("smoke", sources={"x": {"kind": "nope"}}))
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        S.build_sources(get_preset("paper"))
    with pytest.raises(ValueError, match="sources must be"):
        S.load_study("smoke", results_root=tmp_path, sources="some")
    bare = S.load_study("smoke", results_root=tmp_path, sources="none")
    assert bare.sources == {} and bare.gold is not None
    with pytest.raises(ValueError, match="without its sources"):
        S.run(bare, "tpo", 0)
    # "arms" builds only the preset's arms (the embedded LLM sources are measured in 01, not arms)
    arms_only = S.load_study("smoke", results_root=tmp_path, sources="arms", arms=("rougeLsum",))
    assert set(arms_only.sources) == {"rougeLsum"} == set(arms_only.arms)
    assert set(S.load_study("smoke", results_root=tmp_path, arms=("rougeLsum",)).sources) == {"rougeLsum", "bertscore"}


def test_measure_sources_ranks_and_caches(smoke):
    df, per_prompt = S.measure_sources(smoke, n_prompts=6, seed=0)
    assert list(df.columns[:4]) == ["source", "spearman_gold", "value_gold", "win_rate_vs_pi0"]
    assert {"rougeLsum", "bertscore", "gold-best-of-n", "pi_0", "lead-8"} == set(df.source)
    d = df.set_index("source")
    # Best-of-N under r* itself is the best any source can do, per prompt and on average
    for s in smoke.sources:
        assert (per_prompt["gold-best-of-n_gold"] >= per_prompt[f"{s}_gold"] - 1e-12).all()
    assert d.loc["gold-best-of-n", "spearman_gold"] == pytest.approx(1.0)
    assert d.loc["pi_0", "win_rate_vs_pi0"] == 0.5
    assert ((df.win_rate_vs_pi0 >= 0) & (df.win_rate_vs_pi0 <= 1)).all()
    # speed: every scored row scored the whole pool (6 prompts x pool_size) in score_seconds
    scored = d.loc[[*smoke.sources, "gold-best-of-n"]]
    assert (scored.score_seconds > 0).all()
    np.testing.assert_allclose(scored.candidates_per_s * scored.score_seconds, 6 * smoke.preset.pool_size)
    assert d.loc[["pi_0", "lead-8"], "candidates_per_s"].isna().all()
    assert set(df.cpu_flags) == {cpu_flags()}
    worst, best = S.choose_worst_best(smoke)
    assert d.loc[worst, "value_gold"] <= d.loc[best, "value_gold"]
    assert (smoke.root / "sources.csv").exists()
    again, _ = S.measure_sources(smoke, n_prompts=6, seed=0)  # cached: identical
    pd.testing.assert_frame_equal(df, again)


def test_runs_evaluation_and_table1(smoke):
    S.measure_sources(smoke, n_prompts=6, seed=0)
    arms = S.run_all(smoke, ["tpo", "no-transfer", "exploit-worst", "exploit-best"], progress=False)
    p = smoke.preset
    assert list(arms.columns) == ["method", "seed", "iteration", "arm", "pulls", "wins"]
    per = arms.groupby(["method", "seed", "iteration"]).pulls.sum()
    assert (per == p.prompts_per_iteration).all()
    assert set(arms[arms.method == "no-transfer"].arm) == {"online"}
    worst, best = S.choose_worst_best(smoke)
    assert set(arms[arms.method == "exploit-best"].arm) == {best}
    on_disk = pd.read_csv(smoke.root / "arms.csv")
    assert len(on_disk) == len(arms)
    # the merged file keeps other runs' rows only while their folders match this study: rows of an unknown
    # run and of a seed with no run folder are dropped, the finished runs' rows are kept
    ghosts = pd.DataFrame([{"method": "ghost", "seed": 0, "iteration": 1, "arm": "online", "pulls": 1, "wins": 0},
                           {"method": "no-transfer", "seed": 99, "iteration": 1, "arm": "online", "pulls": 1,
                            "wins": 0}])
    pd.concat([on_disk, ghosts]).to_csv(smoke.root / "arms.csv", index=False)
    S.run_all(smoke, ["tpo"], progress=False)  # finished: loaded, not retrained
    merged = pd.read_csv(smoke.root / "arms.csv", dtype={"arm": str})
    pd.testing.assert_frame_equal(merged.sort_values(list(merged.columns)).reset_index(drop=True),
                                  arms.astype({"arm": str}).sort_values(list(arms.columns)).reset_index(drop=True),
                                  check_dtype=False)

    evals = {n: S.evaluate_run(smoke, n) for n in ["tpo", "no-transfer", "exploit-worst", "exploit-best"]}
    for e in evals.values():
        assert set(e.iteration) == set(range(1, p.n_iterations + 1))
        assert len(e) == p.n_iterations * len(p.seeds) * p.n_test_prompts
    table = S.table1(smoke, evals, n_boot=50)
    assert list(table.columns[:7]) == ["baseline", "iteration", "win_rate_mean", "ci_low", "ci_high", "n_seeds",
                                       "p_improve"]
    assert len(table) == 3 * p.n_iterations
    # 2 smoke seeds: no t-interval (never a certain one), no test; the bootstrap interval brackets the mean
    assert table.ci_low.isna().all() and table.ci_high.isna().all() and (table.verdict == "no test").all()
    assert ((table.boot_low <= table.win_rate_mean + 1e-9) & (table.win_rate_mean <= table.boot_high + 1e-9)).all()
    # a policy against itself: exactly 50% (every prompt ties)
    self_table = S.table1(smoke, {"tpo": evals["tpo"], "same": evals["tpo"]}, baselines=["same"], n_boot=20)
    assert np.allclose(self_table.win_rate_mean, 50.0)
    # one iteration only: its rows, and the cached file keeps the other iteration's rows untouched
    path = S.eval_path(smoke, "tpo", p.seeds[0])
    before = path.read_bytes()
    only = S.evaluate_run(smoke, "tpo", [p.seeds[0]], iterations=[p.n_iterations])
    assert set(only.iteration) == {p.n_iterations} and path.read_bytes() == before
    # the declared design: every iteration on the first secondary_seeds seeds, the last on every seed
    one = S.load_study("smoke", results_root=smoke.root.parent, secondary_seeds=1)
    design = S.evaluate_design(one, ["no-transfer", "exploit-best"])
    nt = design["no-transfer"]
    assert set(nt[nt.seed == p.seeds[0]].iteration) == set(range(1, p.n_iterations + 1))
    assert set(nt[nt.seed == p.seeds[1]].iteration) == {p.n_iterations}
    assert set(design["exploit-best"].seed) == {p.seeds[0]}
    pd.testing.assert_frame_equal(nt[nt.iteration == p.n_iterations].reset_index(drop=True),
                                  evals["no-transfer"][evals["no-transfer"].iteration == p.n_iterations]
                                  .reset_index(drop=True))
    # pi_0 is judged once: every seed gets the same judgement, reproducibly (common random numbers)
    pi0 = S.evaluate_pi0(smoke, p.seeds)
    g = [pi0[pi0.seed == s].gold.to_numpy() for s in p.seeds]
    assert all(np.array_equal(g[0], x) for x in g[1:])
    import shutil
    shutil.rmtree(smoke.root / "eval" / "pi_0")
    pd.testing.assert_frame_equal(pi0, S.evaluate_pi0(smoke, p.seeds))

    # two sampled responses per test prompt: the same runs (eval_samples is not part of a run's identity),
    # evaluated again (other evaluation key), twice the rows; all pairs compared, a policy against itself 50%
    two = S.load_study("smoke", results_root=smoke.root.parent, eval_samples=2)
    e2 = S.evaluate_run(two, "tpo")
    assert len(e2) == 2 * len(evals["tpo"]) and set(e2["sample"]) == {0, 1}
    assert set(e2.eval_key).isdisjoint(set(evals["tpo"].eval_key))
    t2 = S.table1(two, {"tpo": e2, "no-transfer": S.evaluate_run(two, "no-transfer")}, baselines=["no-transfer"],
                  n_boot=20)
    assert len(t2) == p.n_iterations and (t2.n_prompts == p.n_test_prompts).all()
    assert np.allclose(S.table1(two, {"tpo": e2, "same": e2}, baselines=["same"], n_boot=20).win_rate_mean, 50.0)


def test_a_rerun_is_loaded_not_retrained(smoke, monkeypatch):
    S.measure_sources(smoke, n_prompts=6, seed=0)
    first = S.run(smoke, "no-transfer", smoke.preset.seeds[0])["arms"]
    from tpo_core.tpo import trainer

    def boom(*a, **k):
        raise AssertionError("a finished run must not train again")

    seed = smoke.preset.seeds[0]
    cost = S.run_seconds(smoke, "no-transfer", seed)
    monkeypatch.setattr(trainer.PreferenceTrainer, "train_iteration", boom)
    again = S.run(smoke, "no-transfer", seed)["arms"]
    pd.testing.assert_frame_equal(first, again)
    # the loaded run still reports what it cost: the sum of its iterations' recorded seconds
    import json

    per_iter = [json.loads((S.run_dir(smoke, "no-transfer", seed) / f"timing_iter_{k}.json").read_text())["seconds"]
                for k in range(1, smoke.preset.n_iterations + 1)]
    assert all(t > 0 for t in per_iter) and S.run_seconds(smoke, "no-transfer", seed) == cost == pytest.approx(sum(per_iter))


def test_run_needs_sources_csv_for_exploit_baselines(tmp_path):
    st = S.load_study("smoke", results_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="notebook 01"):
        S.run(st, "exploit-best", 0)


# --------------------------------------------------------------------- the paper preset, with stand-ins
@pytest.fixture(scope="module")
def paper_stand_ins(tmp_path_factory, smoke):
    """Tiny random local models and a tiny dataset under the paper preset's Hub names."""
    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from helpers import build_tiny_bert
    from tpo_core.world.policy import Policy

    d = tmp_path_factory.mktemp("hub")
    t5 = Policy.load(smoke.pi0_dir)  # a tiny T5 with a T5-style tokenizer
    t5.save(d / "t5")
    tok = t5.tokenizer
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} "
                         "{% endfor %}")
    tok.save_pretrained(d / "rm")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id)
    LlamaForSequenceClassification(cfg).save_pretrained(d / "rm")
    build_tiny_bert(d / "bert", layers=5)  # the paper preset reads layer 5 (distilbert-base has 6)
    rows = smoke.online.iloc[:40]
    ds = datasets.DatasetDict({k: datasets.Dataset.from_pandas(rows[["document", "summary"]].reset_index(drop=True))
                               for k in ("train", "validation", "test")})
    ds.save_to_disk(str(d / "xsum"))
    p = get_preset("paper")
    return {p.policy: d / "t5", p.gold: d / "rm", p.dataset: d / "xsum", "distilbert-base-uncased": d / "bert",
            "google-t5/t5-base": d / "t5", "google-t5/t5-large": d / "t5"}


def test_paper_preset_wiring_with_tiny_stand_ins(paper_stand_ins, tmp_path):
    p = get_preset("paper", prompts_per_iteration=4, pool_size=4, n_candidates=4, top_k=2, n_iterations=1,
                   seeds=(100,), max_input_tokens=32, max_new_tokens=6, n_test_prompts=4, batch_size=2,
                   update_every=2, warmup=1)
    st = S.load_study(p, results_root=tmp_path, model_paths=paper_stand_ins)
    assert set(st.sources) == set(p.sources) and type(st.gold).__name__ == "RewardModelGold"
    assert st.pi0_source == str(paper_stand_ins[p.policy])
    arms = S.run_all(st, ["tpo", "exploit-best"], progress=False)
    assert set(arms[arms.method == "exploit-best"].arm) == {p.best_source}  # fixed by the preset, no 01 needed
    assert arms.groupby(["method"]).pulls.sum().eq(p.prompts_per_iteration).all()
    e = S.evaluate_run(st, "tpo")
    assert len(e) == p.n_test_prompts and np.isfinite(e.gold).all()


def test_reward_model_gold_scores_the_chat_text(paper_stand_ins):
    import torch

    from tpo_core.world.oracle import RewardModelGold

    rm_dir = paper_stand_ins["sfairXC/FsfairX-LLaMA3-RM-v0.1"]
    rm = RewardModelGold(rm_dir, batch_size=1, progress=False)
    prompts, responses = ["a library for python", "the cat sat"], ["python library", "on the mat"]
    s1 = rm.score(prompts, responses, ["x", "y"])
    with torch.no_grad():
        manual = [rm.model(**rm.tokenizer(rm.chat_text(p, r), return_tensors="pt")).logits[0, 0].item()
                  for p, r in zip(prompts, responses)]
    np.testing.assert_allclose(s1, manual, rtol=1e-5, atol=1e-6)
    # several texts of different lengths per call (the default batch): the same scores up to float rounding
    many_p, many_r = prompts * 3 + ["a"], responses * 3 + ["the man is eating bread on a long blue mat"]
    one = RewardModelGold(rm_dir, batch_size=1, progress=False).score(many_p, many_r, ["x"] * 7)
    batched = RewardModelGold(rm_dir, progress=False)
    assert batched.batch_size > 1
    np.testing.assert_allclose(batched.score(many_p, many_r, ["x"] * 7), one, rtol=1e-4, atol=1e-5)
    assert "<assistant> on the mat" in rm.chat_text("the cat sat", "on the mat")
    with pytest.raises(ValueError, match="positive integer"):
        RewardModelGold(rm_dir, batch_size=0)


def test_seq2seq_logprob_source_is_the_policy_log_likelihood(paper_stand_ins, smoke):
    import torch

    from tpo_core.world.policy import Policy
    from tpo_core.world.sources import make_source

    t5_dir = paper_stand_ins["google-t5/t5-base"]
    docs = list(smoke.online.document.iloc[:3])
    resp = ["library for python", "a tool", ""]
    summed = make_source("seq2seq-logprob", model_path=t5_dir, batch_size=2, progress=False)
    mean = make_source("seq2seq-logprob", model_path=t5_dir, reduction="mean", progress=False)
    pol = Policy.from_pretrained(t5_dir)
    with torch.no_grad():
        direct = pol.sequence_logprobs(docs, resp).double().numpy()
    s = summed.score(docs, resp, ["x"] * 3)
    np.testing.assert_allclose(s, direct, rtol=1e-5)
    n_tokens = [len(pol.tokenizer(r)["input_ids"]) for r in resp]  # EOS included
    np.testing.assert_allclose(mean.score(docs, resp, ["x"] * 3), direct / n_tokens, rtol=1e-5)
    assert (s < 0).all() and n_tokens[2] == 1  # the empty response is scored by its EOS alone
    # pools: each document answered several times, in any order and in groups of unequal size; the encoder runs
    # once per document and chunk (shared_prompts) and the scores are the per-row log-likelihoods
    pool_docs = [docs[0], docs[1], docs[0], docs[2], docs[1], docs[0], docs[2], docs[1]]
    pool_resp = ["library for python", "a tool", "", "tool", "python", "a library", "x", "for the mat"]
    with torch.no_grad():
        direct = pol.sequence_logprobs(pool_docs, pool_resp).double().numpy()
    for batch_size in (1, 3, 32):
        got = make_source("seq2seq-logprob", model_path=t5_dir, batch_size=batch_size, progress=False).score(
            pool_docs, pool_resp, ["x"] * len(pool_docs))
        np.testing.assert_allclose(got, direct, rtol=1e-5)


def test_variants_reuse_tpo_iteration_one(smoke, monkeypatch):
    S.measure_sources(smoke, n_prompts=6, seed=0)
    seed = smoke.preset.seeds[0]
    S.run(smoke, "tpo", seed)
    from tpo_core.tpo import trainer

    trained = []
    real = trainer.PreferenceTrainer.train_iteration

    def spy(self, pairs, iteration):
        trained.append(iteration)
        return real(self, pairs, iteration)

    monkeypatch.setattr(trainer.PreferenceTrainer, "train_iteration", spy)
    S.run(smoke, "tpo-carried", seed)
    assert 1 not in trained and trained  # iteration 1 copied from TPO, later ones trained
    import json

    timing = lambda name, k: json.loads((S.run_dir(smoke, name, seed) / f"timing_iter_{k}.json").read_text())  # noqa: E731
    assert timing("tpo-carried", 1) == {"seconds": 0.0, "shared_from": "tpo"}  # paid once, by TPO
    assert S.run_seconds(smoke, "tpo-carried", seed) == pytest.approx(
        sum(timing("tpo-carried", k)["seconds"] for k in range(2, smoke.preset.n_iterations + 1)))
    assert S.run_seconds(smoke, "tpo", seed) > 0
    a = pd.read_csv(S.run_dir(smoke, "tpo", seed) / "records_iter_1.csv")
    b = pd.read_csv(S.run_dir(smoke, "tpo-carried", seed) / "records_iter_1.csv")
    pd.testing.assert_frame_equal(a, b)
    trained.clear()
    S.run(smoke, "tpo-thompson", seed)  # a different selector: iteration 1 differs, so it is trained
    assert 1 in trained

    # evaluation: the copied checkpoint reuses TPO's numbers, which a direct evaluation reproduces
    tpo_eval = S.evaluate_run(smoke, "tpo", [seed])
    calls = []
    real_score = smoke.gold.score
    monkeypatch.setattr(smoke.gold, "score", lambda *a, **k: calls.append(1) or real_score(*a, **k))
    carried = S.evaluate_run(smoke, "tpo-carried", [seed])
    assert len(calls) == smoke.preset.n_iterations - 1  # every iteration but the shared first one
    pd.testing.assert_frame_equal(carried[carried.iteration == 1].reset_index(drop=True),
                                  tpo_eval[tpo_eval.iteration == 1].reset_index(drop=True))
    pol = smoke.new_pi0()
    pol.model.load_state_dict(type(pol.model).from_pretrained(S.run_dir(smoke, "tpo-carried", seed) / "iter_1").state_dict())
    from tpo_core.study import table1 as T

    np.testing.assert_array_equal(T.gold_on_prompts(smoke, pol, 10_000 + seed).ravel(), carried[carried.iteration == 1].gold.to_numpy())
    calls.clear()
    S.evaluate_run(smoke, "tpo-thompson", [seed])  # its own first iteration: evaluated, not shared
    assert len(calls) == smoke.preset.n_iterations


def test_iteration_one_online_batch_is_computed_once_and_shared_exactly(tmp_path, monkeypatch):
    """All methods start from pi_0 on the same prompts with the same streams: iteration 1's online responses
    and their human scores are computed once per seed, and a recomputation gives exactly the same runs."""
    import json

    from tpo_core.study.run_loop import iteration_prompts

    study = S.load_study("smoke", results_root=tmp_path)
    S.measure_sources(study, n_prompts=6, seed=0)
    p, seed = study.preset, study.preset.seeds[0]
    shared = S.first_online_dir(study) / f"seed_{seed}.json"
    S.run(study, "no-transfer", seed)
    assert shared.is_file()
    batch = json.loads(shared.read_text())["batch"]
    docs, refs = iteration_prompts(p, study.online, seed, 1)
    # the shared scores are the human's scores of those responses, recomputed here in one call
    responses = [r for i in range(len(docs)) for r in batch["responses"][str(i)]]
    rep = lambda xs: [x for x in xs for _ in range(p.n_candidates)]  # noqa: E731
    again = study.gold.score(rep(docs), responses, rep(refs), progress=False)
    np.testing.assert_array_equal(np.asarray(again), [g for i in range(len(docs)) for g in batch["scores"][str(i)]])
    rec = pd.read_csv(S.run_dir(study, "no-transfer", seed) / "records_iter_1.csv")
    np.testing.assert_array_equal(rec.gold_best, [max(batch["scores"][str(i)]) for i in rec.prompt_idx])

    # another method: at iteration 1 the human sees only the transferred candidates (top_k per prompt)
    scored = []
    real = study.gold.score
    monkeypatch.setattr(study.gold, "score", lambda pr, rs, rf, **k: scored.append(len(rs)) or real(pr, rs, rf, **k))
    S.run(study, "exploit-best", seed)
    chunk = p.update_every  # one human call per chunk of prompts
    n_chunks = -(-p.prompts_per_iteration // chunk)
    assert scored[:n_chunks] == [p.top_k * min(chunk, p.prompts_per_iteration - c * chunk) for c in range(n_chunks)]
    assert scored[n_chunks] == p.n_candidates * chunk  # iteration 2: its own policy, every candidate is new
    monkeypatch.undo()
    first = {f: (S.run_dir(study, "exploit-best", seed) / f).read_bytes()
             for f in ("records_iter_1.csv", "iter_1/checksums.json", f"iter_{p.n_iterations}/checksums.json")}

    # recomputed from nothing (no shared batch, no run folder): byte-identical batch, records and weights
    import shutil

    old = shared.read_bytes()
    shared.unlink()
    shutil.rmtree(S.run_dir(study, "exploit-best", seed))
    S.run(study, "exploit-best", seed)
    assert shared.read_bytes() == old
    assert {f: (S.run_dir(study, "exploit-best", seed) / f).read_bytes() for f in first} == first

    # a changed setting that draws other online responses is never served the old batch
    other = S.load_study("smoke", results_root=tmp_path, temperature=0.7)
    assert S.first_online_identity(other, seed) != S.first_online_identity(study, seed)
