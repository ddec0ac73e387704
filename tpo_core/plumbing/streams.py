"""Every random stream of the study, derived in this one module.

A seed in a preset names a *run seed*; every random number the study draws comes from a stream derived from it
by one of the functions below, each named for its purpose. Language-model sampling draws per prompt
(:func:`stream_generator` of ``(sampler seed, prompt index, stream id)``), so two methods that hold the same
policy draw the same responses for a prompt (common random numbers). The sampler seeds of the purposes are

=========================  ===========================  =========================================
purpose                    sampler seed                 stream ids
=========================  ===========================  =========================================
iteration ``k`` of a run   ``1000 * seed + k``          ``ONLINE``; ``POOL + j`` for arm ``j``
evaluation (Table 1)       ``10_000 + seed``            ``EVAL``
tuning's evaluation        ``20_000 + seed``            ``EVAL``
the pilot's evaluation     ``30_000 + seed``            ``EVAL``
=========================  ===========================  =========================================

:func:`check_disjoint` proves, for a given set of seeds, that no two of these (purpose, seed, iteration)
streams coincide; :func:`tpo_core.study.loading.check_seeds` calls it before any compute. The other streams are
numpy generators seeded with a list (``[seed, k]``), which numpy's ``SeedSequence`` mixes, and the trainer's
torch seed (``seed + k``: the minibatch order and dropout of iteration ``k``).

A leaf module: it imports nothing from ``tpo_core``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ONLINE", "EVAL", "POOL", "MAX_ITERATIONS", "iteration_seed", "iteration_prompts", "trainer_seed",
           "evaluation_seed", "tuning_seed", "pilot_seed", "source_prompts", "source_seed", "simulation_problem",
           "simulation_learning", "bootstrap", "theory_checks", "theory_bootstrap", "stream_generator", "prompt_streams", "sampler_streams",
           "check_disjoint"]

#: stream ids of :func:`stream_generator`: a prompt's online responses, its evaluation samples, and the
#: Best-of-N pool of the arm at position ``j`` of the selector's arms (``POOL + j``); disjoint, so no two
#: uses share random numbers
ONLINE, EVAL, POOL = 0, 1, 2
#: iterations a run may have: :func:`iteration_seed` is ``1000 * seed + k``, so ``k`` stays below 1000
MAX_ITERATIONS = 999


def iteration_seed(seed: int, k: int) -> int:
    """Sampler seed of iteration ``k`` (1-based) of run seed ``seed``: its online responses and arm pools."""
    if not 0 <= int(k) <= MAX_ITERATIONS:
        raise ValueError(f"iteration must be in 0..{MAX_ITERATIONS}, got {k}")
    return 1000 * int(seed) + int(k)


def iteration_prompts(seed: int, k: int) -> np.random.Generator:
    """The generator that draws iteration ``k``'s prompts for run seed ``seed``."""
    return np.random.default_rng([int(seed), int(k)])


def trainer_seed(seed: int, k: int) -> int:
    """Torch seed of the trainer in iteration ``k``: minibatch order and dropout."""
    return int(seed) + int(k)


def evaluation_seed(seed: int) -> int:
    """Sampler seed of Table 1's evaluation of a checkpoint of run seed ``seed`` (π_0: the first seed's)."""
    return 10_000 + int(seed)


def tuning_seed(seed: int) -> int:
    """Sampler seed of the tuning protocol's evaluation of a tuning run's last checkpoint."""
    return 20_000 + int(seed)


def pilot_seed(seed: int) -> int:
    """Sampler seed of the pilot's evaluation of a pilot run's last checkpoint."""
    return 30_000 + int(seed)


def source_prompts(seed: int) -> np.random.Generator:
    """The generator that draws the prompts on which notebook 01 measures the sources."""
    return np.random.default_rng([int(seed), 1])


def source_seed(seed: int) -> int:
    """Torch seed of notebook 01's Best-of-N pools (one generator for the whole measurement)."""
    return int(seed)


def simulation_problem(seed: int) -> np.random.Generator:
    """The generator that draws a simulated finite problem (r*, π_ref, ρ, sources) of the theory chapters."""
    return np.random.default_rng([int(seed), 0])


def simulation_learning(seed: int) -> np.random.Generator:
    """The generator of a simulated learner's randomness (labels, arm draws) in the theory chapters."""
    return np.random.default_rng([int(seed), 1])


def bootstrap(seed: int) -> np.random.Generator:
    """The generator of the bootstrap resamples of the Table 1, ablation and IPO chapters (their ``seed``)."""
    return np.random.default_rng(int(seed))


def theory_checks(seed: int) -> np.random.Generator:
    """The generator of the random finite problems on which chapter 00 checks the lemmas."""
    return np.random.default_rng(int(seed))


def theory_bootstrap(seed: int) -> np.random.Generator:
    """The generator of chapter 05's bootstrap intervals over simulated runs."""
    return np.random.default_rng([int(seed), 99])


def stream_generator(seed: int, index: int, stream: int):
    """A ``torch.Generator`` (CPU) that depends only on ``(seed, index, stream)``.

    Seeded with ``numpy.random.SeedSequence([seed, index, stream])``'s first 63-bit word: distinct, well-mixed
    streams for nearby integers. The study gives every prompt its own stream (``seed`` a sampler seed of the
    table above, ``index`` = the prompt's position).
    """
    import torch

    words = [int(seed), int(index), int(stream)]
    if min(words) < 0:
        raise ValueError(f"seed, index and stream must be >= 0, got {words}")
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def prompt_streams(seed: int, indices, stream: int) -> list:
    """One :func:`stream_generator` per prompt index, for ``Policy.sample(generator=...)``."""
    return [stream_generator(seed, i, stream) for i in indices]


def sampler_streams(seed: int, n_iterations: int, n_arms: int, *, evaluation=evaluation_seed) -> dict[str, set]:
    """The ``(sampler seed, stream id)`` pairs that one run seed draws from, by purpose (``{purpose: set}``):
    its iterations' online responses and arm pools, and its evaluation (``evaluation``: :func:`evaluation_seed`,
    :func:`tuning_seed` or :func:`pilot_seed`)."""
    iters = range(1, int(n_iterations) + 1)
    return {"online": {(iteration_seed(seed, k), ONLINE) for k in iters},
            "pools": {(iteration_seed(seed, k), POOL + j) for k in iters for j in range(int(n_arms))},
            "evaluation": {(evaluation(seed), EVAL)}}


def check_disjoint(seeds, n_iterations: int, n_arms: int, *, tuning=(), pilot=()) -> None:
    """Raise ``ValueError`` unless no two streams of :func:`sampler_streams` coincide, across purposes and across
    seeds: the run ``seeds`` (evaluated with :func:`evaluation_seed`), the ``tuning`` seeds (:func:`tuning_seed`)
    and the ``pilot`` seeds (:func:`pilot_seed`). Run seed 10_100 and tuning seed 100, for example, collide: the
    evaluation stream of the first is the tuning stream of the second."""
    if not 1 <= int(n_iterations) <= MAX_ITERATIONS:
        raise ValueError(f"n_iterations must be in 1..{MAX_ITERATIONS}, got {n_iterations}")
    owner: dict = {}
    for kind, evaluation, group in (("run seed", evaluation_seed, seeds), ("tuning seed", tuning_seed, tuning),
                                    ("pilot seed", pilot_seed, pilot)):
        for s in group:
            for purpose, pairs in sampler_streams(int(s), n_iterations, n_arms, evaluation=evaluation).items():
                mine = f"{purpose} of {kind} {int(s)}"
                for pair in pairs:
                    if pair in owner:
                        raise ValueError(f"random streams collide: the {owner[pair]} and the {mine} both draw from "
                                         f"sampler seed {pair[0]}, stream id {pair[1]} (tpo_core.plumbing.streams); choose "
                                         f"other seeds")
                    owner[pair] = mine
