"""The random streams of the study (tpo_core.plumbing.streams): one named derivation per purpose, and no two purposes or
seeds share a stream."""

import numpy as np
import pytest
import torch

from tpo_core.plumbing import streams
from tpo_core.study.pilot import PILOT_SEEDS
from tpo_core.world.presets import PRESETS
from tpo_core.study.tuning import TUNING_SEEDS


def test_every_preset_tuning_and_pilot_seed_draws_from_its_own_streams():
    for p in PRESETS.values():
        n_arms = len(p.arms or p.sources) + 1
        streams.check_disjoint(p.seeds, p.n_iterations, n_arms, tuning=TUNING_SEEDS, pilot=PILOT_SEEDS)
        owned = [streams.sampler_streams(s, p.n_iterations, n_arms) for s in p.seeds]
        flat = [pair for d in owned for pairs in d.values() for pair in pairs]
        assert len(flat) == len(set(flat)) == len(p.seeds) * (p.n_iterations * (1 + n_arms) + 1)


@pytest.mark.parametrize("seeds, tuning, pilot, clash", [
    ([10_100], [100], [], "evaluation of run seed 10100 and the evaluation of tuning seed 100"),
    ([100], [], [100], "online of run seed 100 and the online of pilot seed 100"),
    ([20_100], [], [100], "evaluation of run seed 20100 and the evaluation of pilot seed 100"),
])
def test_colliding_seeds_are_refused_naming_both_purposes(seeds, tuning, pilot, clash):
    with pytest.raises(ValueError, match=clash):
        streams.check_disjoint(seeds, 3, 3, tuning=tuning, pilot=pilot)


def test_iteration_seed_refuses_an_iteration_that_would_reach_the_next_seed():
    assert streams.iteration_seed(7, 999) == 7999 and streams.iteration_seed(8, 1) == 8001
    with pytest.raises(ValueError, match="iteration"):
        streams.iteration_seed(7, 1000)
    with pytest.raises(ValueError, match="n_iterations"):
        streams.check_disjoint([1], 1000, 2)


def test_the_named_derivations_are_the_ones_the_study_used():
    # the values the cached results of earlier versions were made with: renaming must not move a stream
    assert [streams.iteration_seed(100, 3), streams.evaluation_seed(100), streams.tuning_seed(100),
            streams.pilot_seed(100), streams.trainer_seed(100, 2)] == [100003, 10100, 20100, 30100, 102]
    for make, words in [(streams.iteration_prompts, lambda s: [s, 2]), (streams.source_prompts, lambda s: [s, 1]),
                        (streams.simulation_problem, lambda s: [s, 0]), (streams.theory_bootstrap, lambda s: [s, 99]),
                        (streams.bootstrap, lambda s: s)]:
        args = (5, 2) if make is streams.iteration_prompts else (5,)
        assert make(*args).integers(1 << 30) == np.random.default_rng(words(5)).integers(1 << 30)


def test_prompt_streams_differ_by_stream_id_and_repeat_for_equal_inputs():
    a, b = streams.prompt_streams(100003, [0, 1], streams.ONLINE), streams.prompt_streams(100003, [0, 1], streams.EVAL)
    draws = [torch.rand(3, generator=g) for g in a + b]
    assert not torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])
    assert torch.equal(torch.rand(3, generator=streams.stream_generator(100003, 0, streams.ONLINE)), draws[0])
