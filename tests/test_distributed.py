"""Data-parallel TPO: one smoke iteration on two CPU processes (gloo, accelerate's
``debug_launcher``) against the same iteration on one process.

Shown: the same arm for every prompt and the same pooled selector statistics (an all-reduce of each
process's pulls and wins equals them); the same pairs on both processes as on one; trained weights equal
within ``REL_TOL``; every file written once, by the main process, atomically, and none left half.
"""

import json
import os
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from test_study import paper_stand_ins, smoke  # noqa: F401  (the stand-in fixtures)
from tpo_core.plumbing import sharding as D
from tpo_core.study import pipeline as S

#: Weights after training, two processes (w2) against one (w1), both from w0: the relative difference of the
#: training update, ||w2 - w1|| / ||w1 - w0||, at most ``REL_TOL``, and no entry further apart than
#: 2 · lr · steps (AdamW moves an entry by at most ~lr per step). Why not bit equality: the runs differ only in
#: the order of fp32 sums (each process sums its share of the batch and pads it to its own longest sequence;
#: gloo's all-reduce adds the shares), a relative error ~1e-7 per gradient entry. AdamW divides by sqrt(v), so
#: an entry whose gradient is itself rounding noise (a sum that cancels) gets an update of either sign in each
#: run: a few entries differ by ~1e-5 where the rest agree to an ulp. The same happens in one process with two
#: valid summation orders (share_prompts on/off on the 5-pair Llama case below: 1.7e-5 max). Measured: up to
#: 7e-5 relative (tiny Llama, 5 pairs); training with a wrong global batch (the per-device batch not halved)
#: is 0.45-0.6 away, so the tolerance separates rounding from a wrong gradient by four orders of magnitude.
REL_TOL = 1e-3


def weight_difference(w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> tuple[float, float]:
    """(max |w2 - w1|, ||w2 - w1|| / ||w1 - w0||) of flattened weights."""
    return float((w2 - w1).abs().max()), float((w2 - w1).norm() / (w1 - w0).norm())


def assert_weights_close(w0, w1, w2, lr: float, steps: int) -> tuple[float, float]:
    """The criterion of ``REL_TOL``; returns :func:`weight_difference`."""
    diff, rel = weight_difference(w0, w1, w2)
    assert rel <= REL_TOL, f"relative difference of the update {rel:.3e} > {REL_TOL}"
    assert diff <= 2 * lr * steps, f"max difference {diff:.3e} > 2 lr steps"
    return diff, rel


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# ----------------------------------------------------------------------------------------- unit pieces
@pytest.mark.parametrize("n,per_device,world", [(7, 2, 2), (8, 2, 2), (5, 1, 4), (1, 3, 2), (10, 3, 3)])
def test_local_batches_partition_each_global_batch(n, per_device, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shares = [D.local_batches(order, per_device, world, r) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # every process runs the same number of micro-batches
    width = per_device * world
    for s, start in enumerate(range(0, n, width)):
        batch = order[start:start + width]
        real = [shares[r][s][0][:shares[r][s][1]] for r in range(world)]
        torch.testing.assert_close(torch.cat(real), batch)  # in rank order: exactly one process's batch
        assert all(shares[r][s][2] == len(batch) for r in range(world))
        assert all(len(shares[r][s][0]) >= 1 for r in range(world))  # a dummy pair where the slice is empty
    with pytest.raises(ValueError, match="bad sharding"):
        D.local_batches(order, 0, world, 0)


def test_stream_generator_is_a_function_of_its_inputs():
    from tpo_core.plumbing.streams import stream_generator

    draw = lambda *a: torch.rand(4, generator=stream_generator(*a))  # noqa: E731
    torch.testing.assert_close(draw(1001, 8, 0), draw(1001, 8, 0))
    for other in [(1002, 8, 0), (1001, 9, 0), (1001, 8, 1)]:
        assert not torch.equal(draw(1001, 8, 0), draw(*other))
    with pytest.raises(ValueError, match=">= 0"):
        stream_generator(-1, 0, 0)
    with pytest.raises(ValueError, match="group_size"):
        D.Sharding(0)


def test_one_process_is_unsharded_unless_given_a_sharding():
    assert D.resolve(None) is None and D.per_device_batch(None, 64) == 64
    s = D.Sharding(3)
    assert D.resolve(s) is s and s.state.num_processes == 1 and D.per_device_batch(s, 64) == 64
    with pytest.raises(TypeError, match="Sharding or None"):
        D.resolve(3)


# ------------------------------------------------- the sharded loop is Alg. 3's loop (peer oracle)
class _FixedPolicy:
    """Responses that depend only on the document and their position (the generator is ignored), so the
    sharded loop and collect_iteration see the same responses and must agree on everything."""

    def sample(self, documents, n, *, temperature, max_new_tokens, generator):
        assert len(generator) == len(documents) and all(isinstance(g, torch.Generator) for g in generator)
        return [[f"{d}:{(sum(map(ord, d)) * 7 + 13 * j) % 97}" for j in range(n)] for d in documents]


class _Number:
    def __init__(self, mod):
        self.mod = mod

    def score(self, prompts, responses, references):
        return np.array([float(int(r.split(":")[1]) % self.mod) for r in responses])


@pytest.mark.parametrize("group_size", [1, 3, 5])
@pytest.mark.parametrize("policy", ["paper-ucb", "thompson"])
def test_sharded_collection_equals_collect_iteration_for_fixed_responses(group_size, policy):
    from tpo_core.tpo.empirical import collect_iteration
    from tpo_core.tpo.selection import TransferSelector

    docs = [f"doc {i}" for i in range(23)]  # chunks of 4 with a partial last one
    out = []
    for sharding in (None, D.Sharding(group_size)):
        sel = TransferSelector(["a", "b", "null"], policy=policy, update_every=4, warmup=4, seed=7)
        pairs, records = collect_iteration(
            _FixedPolicy(), docs, [f"ref {i}" for i in range(23)], selector=sel,
            sources={"a": _Number(89), "b": _Number(11)}, gold=_Number(23), n_candidates=4,
            pool_size=6, top_k=2, seed=3, progress=False, sharding=sharding)
        out.append((pairs, records, sel.state_dict()))
    (p1, r1, s1), (p2, r2, s2) = out
    assert p1 == p2 and s1 == s2
    pd.testing.assert_frame_equal(r1, r2)
    assert set(r1.arm) == {"a", "b", "null"}  # all arms were used
    with pytest.raises(ValueError, match="no source"):
        collect_iteration(_FixedPolicy(), docs, docs, selector=TransferSelector(["a", "null"]),
                          sources={}, gold=_Number(3), n_candidates=4, pool_size=4, top_k=2, seed=0,
                          sharding=D.Sharding(2))


# -------------------------------------------------------------------- the trainer on two processes
#: (model, pairs, pairs per device, grad_accum): an even split; an uneven last global batch (3 pairs: 2 + 1);
#: a last global batch of 1 pair (process 1 gets a zero-weight dummy), on T5 and on a causal Llama;
#: accumulation with a partial last group.
TRAIN_CASES = [("t5", 8, 2, 1), ("t5", 7, 2, 1), ("t5", 5, 2, 1), ("llama", 5, 2, 1), ("t5", 7, 1, 2)]


def _train(case, num_processes):
    from test_trainer import make_pairs, tiny_model, tiny_tokenizer

    from tpo_core.tpo.trainer import PreferenceConfig, PreferenceTrainer

    kind, n, per_device, accum = case
    tok = tiny_tokenizer()
    model = tiny_model(kind, tok)
    cfg = PreferenceConfig(lr=3e-3, warmup_steps=0, epochs=2, batch_size=per_device * (2 // num_processes),
                           grad_accum=accum, progress=False, seed=0)
    trainer = PreferenceTrainer(model, tok, replace(cfg, ref_batch_size=3))
    ref = trainer.reference_logprobs(make_pairs(n)).cpu()  # blocks of 3 pairs: dealt unevenly to 2 processes
    logs = trainer.train_iteration(make_pairs(n), 1)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), logs, ref


def _train_worker(out):
    from accelerate import PartialState

    _reset_accelerate()
    state = PartialState(cpu=True)
    torch.set_num_threads(1)
    results = []
    for case in TRAIN_CASES:
        _reset_accelerate()  # each trainer builds its own Accelerator (gradient state included)
        state = PartialState(cpu=True)
        torch.set_num_threads(1)  # PartialState sets its own count (physical cores / processes)
        results.append(_train(case, 2))
    if state.is_main_process:
        torch.save([(w, logs.to_dict("list"), ref) for w, logs, ref in results], out)


def test_trainer_global_batch_is_independent_of_the_process_count(tmp_path):
    """Same pairs, same global batch: 2 processes (per-device batch halved) train the weights of 1 process,
    within the fp32 summation-order tolerance that tests/test_trainer.py allows accumulation vs a larger batch."""
    from accelerate import debug_launcher

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = [_train(case, 1) for case in TRAIN_CASES]
    finally:
        torch.set_num_threads(threads)
    _reset_accelerate()
    debug_launcher(_train_worker, args=(tmp_path / "two.pt",), num_processes=2)
    two = torch.load(tmp_path / "two.pt")
    for case, (w1, logs1, ref1), (w2, logs2, ref2) in zip(TRAIN_CASES, single, two):
        # the same blocks of pairs through the same code path: equal up to the kernels' fp32 rounding (bit-equal
        # in our runs but once, under heavy load from another job)
        torch.testing.assert_close(ref2, ref1, rtol=1e-6, atol=1e-5)
        from test_trainer import tiny_model, tiny_tokenizer

        w0 = torch.cat([p.detach().flatten() for p in tiny_model(case[0], tiny_tokenizer()).parameters()])
        diff, rel = assert_weights_close(w0, w1, w2, 3e-3, len(logs1))
        print(f"{case}: max |w_2proc - w_1proc| = {diff:.2e}, relative {rel:.2e}, {len(logs1)} steps")
        if case == TRAIN_CASES[0]:  # negative control: a global batch twice as large is far outside the tolerance
            wrong = _train((case[0], case[1], case[2] * 2, case[3]), 1)[0]
            assert weight_difference(w0, w1, wrong)[1] > 100 * REL_TOL
        assert logs2["step"] == list(logs1.step)  # the same number of optimizer steps
        assert logs2["loss"] == pytest.approx(list(logs1.loss), rel=1e-5), case


# ------------------------------------------------------------------------------------ two processes
@pytest.fixture(scope="module")
def smoke1(tmp_path_factory):
    """The smoke study, one iteration, one seed (loaded once; the forked processes inherit its models)."""
    return S.load_study("smoke", results_root=tmp_path_factory.mktemp("dist"), n_iterations=1, seeds=(0,))


def _worker(study, log_dir, seed, evaluate_pi0):
    """One process of the launch: run TPO for ``seed`` (``study`` holds the sharding), log every rename and the
    pairs it trained on."""
    _reset_accelerate()
    from accelerate import PartialState
    from accelerate.utils import reduce

    PartialState(cpu=True)  # joins the launch's process group (it sets a thread count: reset below)
    torch.set_num_threads(1)

    from tpo_core.tpo import trainer

    rank = PartialState().process_index
    renames, local = [], []
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def spy(src, dst, _real=real):
            renames.append([rank, str(dst), Path(src).name])
            return _real(src, dst)

        setattr(os, name, spy)
    import accelerate.utils

    real_gather = accelerate.utils.gather_object  # what tpo_core.plumbing.sharding.gather and the trainer call
    accelerate.utils.gather_object = lambda obj: local.append(obj) or real_gather(obj)
    real_train = trainer.PreferenceTrainer.train_iteration

    def train_spy(self, pairs, iteration):
        (log_dir / f"pairs_{rank}.json").write_text(json.dumps(pairs))
        return real_train(self, pairs, iteration)

    trainer.PreferenceTrainer.train_iteration = train_spy
    t0 = time.perf_counter()
    S.run(study, "tpo", seed)
    seconds = time.perf_counter() - t0
    # the collection's gathers (lists of outcome dicts; the reference log-probs' and the evaluation's are not)
    collected = [chunk for chunk in local if all(isinstance(o, dict) for o in chunk)]
    if evaluate_pi0:
        S.evaluate_pi0(study, [seed])
    # the pooled statistics are an all-reduce of what each process saw: check with accelerate's reduce
    state = json.loads((S.run_dir(study, "tpo", seed) / "selector_state_iter_1.json").read_text())
    arms = state["config"]["arms"]
    mine = torch.zeros(2, len(arms), dtype=torch.float64)
    for chunk in collected:
        for o in chunk:
            mine[0, arms.index(o["arm"])] += 1
            mine[1, arms.index(o["arm"])] += o["win"] if o["arm"] != "null" else 0.0
    pooled = reduce(mine, "sum")
    (log_dir / f"log_{rank}.json").write_text(json.dumps({
        "renames": renames, "local": mine.tolist(), "pooled": pooled.tolist(), "seconds": seconds,
        "num_processes": PartialState().num_processes}))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("group_size", [1, 2])
def test_two_processes_equal_one(smoke1, tmp_path, monkeypatch, group_size):
    from accelerate import debug_launcher

    seed = smoke1.preset.seeds[0]
    sharding = D.Sharding(group_size)  # the runs' folders are keyed by their batching too
    one = replace(smoke1, root=tmp_path / "one", sharding=sharding)
    two = replace(smoke1, root=tmp_path / "two", sharding=sharding)
    # one process, sharded mode (the grouped random streams), same thread count as each launched process
    from tpo_core.tpo import trainer

    pairs_one = []
    real_train = trainer.PreferenceTrainer.train_iteration
    monkeypatch.setattr(trainer.PreferenceTrainer, "train_iteration",
                        lambda self, pairs, *a: pairs_one.append(pairs) or real_train(self, pairs, *a))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        S.run(one, "tpo", seed)
        seconds_one = time.perf_counter() - t0
        S.evaluate_pi0(one, [seed])
    finally:
        torch.set_num_threads(threads)
    monkeypatch.undo()
    _reset_accelerate()  # the parent's state must not leak into the forked processes

    logs = tmp_path / "logs"
    logs.mkdir()
    t0 = time.perf_counter()
    debug_launcher(_worker, args=(two, logs, seed, True), num_processes=2)
    wall = time.perf_counter() - t0
    log = [json.loads((logs / f"log_{r}.json").read_text()) for r in (0, 1)]
    assert [entry["num_processes"] for entry in log] == [2, 2]

    d1, d2 = S.run_dir(one, "tpo", seed), S.run_dir(two, "tpo", seed)
    # identical decisions: every prompt's arm, win and gold scores, byte for byte
    assert (d1 / "records_iter_1.csv").read_bytes() == (d2 / "records_iter_1.csv").read_bytes()
    records = pd.read_csv(d1 / "records_iter_1.csv")
    assert len(set(records.arm)) > 1  # the bandit did choose (warm-up and UCB), not one fixed arm
    # identical pooled statistics and selector random state
    state1 = json.loads((d1 / "selector_state_iter_1.json").read_text())
    assert state1 == json.loads((d2 / "selector_state_iter_1.json").read_text())
    # ... which are the all-reduce of what each process saw, and each process saw a real share
    for entry in log:
        assert entry["pooled"] == [state1["pulls"], [w for w in state1["wins"]]]
    assert all(sum(entry["local"][0]) > 0 for entry in log)
    np.testing.assert_array_equal(np.add(log[0]["local"], log[1]["local"]), log[0]["pooled"])
    # identical pairs, on both processes
    assert pairs_one and all(json.loads((logs / f"pairs_{r}.json").read_text()) == pairs_one[0] for r in (0, 1))

    # weights after training: equal within float tolerance (REL_TOL: why and how much)
    from safetensors.torch import load_file

    w1, w2 = load_file(d1 / "iter_1" / "model.safetensors"), load_file(d2 / "iter_1" / "model.safetensors")
    assert w1.keys() == w2.keys()
    flat = lambda w: torch.cat([w[k].flatten() for k in sorted(w)])  # noqa: E731
    w0 = flat({k: v for k, v in smoke1.new_pi0().model.state_dict().items() if k in w1})
    l1, l2 = pd.read_csv(d1 / "iter_1" / "logs.csv"), pd.read_csv(d2 / "iter_1" / "logs.csv")
    diff, rel = assert_weights_close(w0, flat(w1), flat(w2), smoke1.preset.learning_rate, len(l1))
    print(f"\nmax |w_2proc - w_1proc| = {diff:.3e}, relative to the update {rel:.2e} (training moved weights by "
          f"up to {float((flat(w1) - w0).abs().max()):.3e}); 2-process launch {wall:.1f} s wall (TPO iteration "
          f"{log[0]['seconds']:.1f} s), 1 process {seconds_one:.1f} s")
    # not "accuracy" (chosen_reward > rejected_reward): at the first step the policy is its reference and
    # both rewards are rounding noise (~1e-7), whose sign depends on the summation order
    cols = ["loss", "chosen_reward", "rejected_reward", "margin", "implicit_kl"]
    np.testing.assert_allclose(l2[cols].to_numpy(), l1[cols].to_numpy(), rtol=1e-4, atol=1e-6)

    # sharded evaluation: the same gold rewards as on one process
    [ev] = [f.relative_to(one.root) for f in one.root.glob("eval/pi_0/*/*/once.csv")]
    assert (one.root / ev).read_bytes() == (two.root / ev).read_bytes()

    # files: the same set, each written once by the main process through a temporary name, none left half
    assert _files(one.root) == _files(two.root)
    renames = log[0]["renames"] + log[1]["renames"]
    assert renames and {r for r, _, _ in renames} == {0}
    targets = Counter(dst for _, dst, _ in renames)
    assert max(targets.values()) == 1, targets
    assert all(src.startswith(".") and ".tmp" in src for _, _, src in renames)
    assert not [f for f in _files(two.root) if ".tmp" in f]


def _paper_worker(study, seed):
    from accelerate import PartialState

    _reset_accelerate()
    PartialState(cpu=True)
    torch.set_num_threads(1)
    S.run(study, "tpo", seed)
    S.evaluate_run(study, "tpo", [seed])


def test_paper_preset_on_two_processes_with_stand_ins(paper_stand_ins, tmp_path):
    """The paper preset's wiring (tiny random stand-ins under its Hub names) through a 2-process launch."""
    from accelerate import debug_launcher

    from tpo_core.world.presets import get_preset

    p = get_preset("paper", prompts_per_iteration=4, pool_size=4, n_candidates=4, top_k=2, n_iterations=1,
                   seeds=(100,), max_input_tokens=32, max_new_tokens=6, n_test_prompts=4, batch_size=2,
                   update_every=2, warmup=1)
    st = S.load_study(p, results_root=tmp_path, model_paths=paper_stand_ins, sources="arms")
    _reset_accelerate()
    debug_launcher(_paper_worker, args=(st, 100), num_processes=2)
    launched = replace(st, sharding=D.Sharding())  # as the launched processes ran: keys include the batching
    d, ev = S.run_dir(launched, "tpo", 100), S.eval_path(launched, "tpo", 100)
    records = pd.read_csv(d / "records_iter_1.csv")
    assert list(records.prompt_idx) == list(range(p.prompts_per_iteration))
    assert (d / "iter_1" / "model.safetensors").is_file()
    meta = json.loads((d / "iter_1" / "preference_config.json").read_text())
    assert meta["config"]["batch_size"] * 2 == p.batch_size  # per device: the global batch over 2 processes
    e = pd.read_csv(ev)
    assert len(e) == p.n_test_prompts and np.isfinite(e.gold).all()
    assert not [f for f in _files(tmp_path) if ".tmp" in f]


def test_accelerate_launch_runs_the_paper_preset_cli(paper_stand_ins, tmp_path, capsys):
    """The README's command, ``accelerate launch --num_processes 2 -m tpo_core.commands.distributed``, on CPU with the
    paper preset's tiny stand-ins: one TPO iteration and its evaluation, end to end."""
    import shutil
    import subprocess
    import sys

    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.is_file():
        accelerate = shutil.which("accelerate")
    sets = dict(prompts_per_iteration=4, pool_size=4, n_candidates=4, top_k=2, n_iterations=1, seeds=(100,),
                max_input_tokens=32, max_new_tokens=6, n_test_prompts=4, batch_size=2, update_every=2, warmup=1)
    # --multi_gpu selects accelerate's torchrun launcher (with --cpu it starts one process unless MPI is set up);
    # with no CUDA device every process then joins a gloo group on the CPU (PartialState(cpu=True))
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29512",
           "-m", "tpo_core.commands.distributed", "--preset", "paper", "--run", "tpo", "--results-root", str(tmp_path),
           "--group-size", "1", "--evaluate",
           *[a for k, v in sets.items() for a in ("--set", f"{k}={v!r}")],
           *[a for k, v in paper_stand_ins.items() for a in ("--model-path", f"{k}={v}")]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("done: tpo") == 1  # printed by the main process only
    [d] = (tmp_path / "paper" / "runs" / "tpo").glob("*/seed_100")  # runs/<run>/<key>/seed_<s>
    records = pd.read_csv(d / "records_iter_1.csv")
    assert list(records.prompt_idx) == [0, 1, 2, 3]
    meta = json.loads((d / "iter_1" / "preference_config.json").read_text())
    assert meta["config"]["batch_size"] == 1  # 2 pairs per step over 2 processes
    [e] = (tmp_path / "paper" / "eval" / "tpo").glob("*/*/seed_100.csv")
    e = pd.read_csv(e)
    assert len(e) == 4 and np.isfinite(e.gold).all()
    # prune judges the launch's results by the launch's batching: used with --group-size, not from one process
    from tpo_core.commands import prune

    argv = ["--preset", "paper", "--results-dir", str(tmp_path), *[a for k, v in sets.items() for a in ("--set", f"{k}={v!r}")],
            *[a for k, v in paper_stand_ins.items() for a in ("--model-path", f"{k}={v}")]]
    status = {}
    for name, extra in (("launch", ["--group-size", "1"]), ("one process", [])):
        capsys.readouterr()
        prune.main([*argv, *extra])
        lines = capsys.readouterr().out.splitlines()
        status[name] = {ln.split()[0] for ln in lines if f"runs/tpo/{d.parent.name}" in ln}
    assert status == {"launch": {"used"}, "one process": {"UNUSED"}}


def test_trainer_refuses_engines_it_does_not_support():
    """DeepSpeed needs model and optimizer prepared together; the trainer says so instead of training wrongly."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType
    from test_trainer import tiny_model, tiny_tokenizer

    from tpo_core.tpo.trainer import PreferenceConfig, PreferenceTrainer

    tok = tiny_tokenizer()
    for kind in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        with pytest.raises(ValueError, match="DDP"):
            PreferenceTrainer(tiny_model("t5", tok), tok, PreferenceConfig(progress=False),
                              accelerator=SimpleNamespace(distributed_type=kind))


def test_a_two_process_launch_flows_into_table1(tmp_path):
    """Every run of the declared table made by ``accelerate launch`` on 2 CPU processes (``--group-size 2``), then
    read in one process with ``load_study(group_size=2)``, and by the Table 1 chapter with its ``group_size``
    parameter: nothing is trained or judged again, and Table 1 comes out of the launch's results."""
    import shutil
    import subprocess
    import sys

    from tpo_core.commands import reproduce

    S.measure_sources(S.load_study("smoke", results_root=tmp_path), n_prompts=6, seed=0)  # chapter 01's ranking

    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.is_file():
        accelerate = shutil.which("accelerate")
    runs = ["tpo", "no-transfer", "exploit-worst", "exploit-best", "exploit-oracle"]
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29513",
           "-m", "tpo_core.commands.distributed", "--preset", "smoke", "--results-root", str(tmp_path),
           "--group-size", "2", "--evaluate", *[a for r in runs for a in ("--run", r)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert [ln.split(",")[0] for ln in out.stdout.splitlines() if ln.startswith("done: ")] == [f"done: {r}" for r in runs]
    made = {f: (tmp_path / f).stat().st_mtime_ns for f in _files(tmp_path)}

    study = S.load_study("smoke", results_root=tmp_path, group_size=2, sources="arms")
    S.run_all(study, runs, progress=False)  # found, not retrained
    evals = S.evaluate_design(study, runs)  # found, not judged again
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in made} == made
    table = S.write_table1(study, evals)
    assert list(table.role.drop_duplicates()) == ["primary", "control", "secondary"]
    assert (tmp_path / "smoke" / "table1.csv").is_file()
    # the chapter, as `nox -s reproduce -- --set group_size=2` runs it: the same table from the same files
    (tmp_path / "smoke" / "table1.csv").unlink()
    reproduce.run_notebook(reproduce._spec("04_table1"), quick=True, settings={"group_size": 2},
                           executed_dir=tmp_path / "executed", results_dir=tmp_path)
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in made} == made
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "smoke" / "table1.csv")[["role", "method", "baseline"]],
                                  table[["role", "method", "baseline"]])
    # one process without the launch's group size does not mistake them for its own
    plain = S.load_study("smoke", results_root=tmp_path, sources="none")
    from tpo_core.plumbing.provenance import StaleResultError

    with pytest.raises(StaleResultError):
        S.check_run(plain, "tpo", plain.preset.seeds[0])
    with pytest.raises(ValueError, match="not both"):
        S.load_study("smoke", results_root=tmp_path, group_size=2, sharding=D.Sharding(2), with_models=False)
