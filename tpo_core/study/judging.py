"""Judging a policy: the simulated human's reward r* of responses sampled from it on held-out prompts (paper
§6.1's evaluation; notebook 04 and the pilot and tuning protocols), and the key of the settings a judgment depends
on (:func:`eval_key`). Only what computes a judgment is here, so that an edit to Table 1's statistics
(:mod:`tpo_core.study.table1`, :mod:`tpo_core.study.power`) re-judges nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tpo_core.plumbing.provenance import code_identity, sha256_json
from tpo_core.plumbing.sharding import Sharding, deal, gather
from tpo_core.plumbing.streams import EVAL, prompt_streams

if TYPE_CHECKING:  # a type only: judging does not run the study's loading code
    from tpo_core.study.loading import Study

__all__ = ["JUDGING_CODE", "gold_on_test", "gold_on_prompts", "eval_identity", "eval_key", "eval_settings_key"]

#: The modules whose code computes a judgment: this one, the sampler (:mod:`tpo_core.world.policy`) and the human
#: (:mod:`tpo_core.world.oracle`), with what they import (:func:`tpo_core.plumbing.provenance.code_identity`).
JUDGING_CODE = ("study.judging", "world.policy", "world.oracle")


def gold_on_test(policy, documents, references, *, gold, seed: int, temperature: float,
                 max_new_tokens: int | None, n_samples: int = 1, sharding: Sharding | None = None) -> np.ndarray:
    """Gold reward of ``n_samples`` sampled responses per test prompt, shape ``(len(documents), n_samples)``.

    Each prompt has its own random stream (:func:`tpo_core.plumbing.streams.stream_generator` of ``seed``, its index
    and the ``EVAL`` stream), so two policies evaluated with the same ``seed`` share their random numbers
    prompt by prompt (common random numbers: less noise in their paired comparison). Sharded
    (:mod:`tpo_core.plumbing.sharding`), groups of ``group_size`` prompts are dealt round-robin, each sampled and
    scored on its own, and gathered: every process returns the whole array, the same for any number of
    processes; one process without a ``sharding`` samples and scores all prompts in one call each.
    """
    documents, references = list(documents), list(references)
    if not documents or len(documents) != len(references):
        raise ValueError("documents and references must be non-empty and of equal length")
    idx = list(range(len(documents)))
    local = []
    for group in deal(sharding, idx):
        resp = policy.sample([documents[i] for i in group], n_samples, temperature=temperature,
                             max_new_tokens=max_new_tokens, generator=prompt_streams(seed, group, EVAL))
        rep = lambda xs: [xs[i] for i in group for _ in range(n_samples)]  # noqa: E731
        scores = np.asarray(gold.score(rep(documents), [r for rs in resp for r in rs], rep(references)), dtype=float)
        local += [(i, row.tolist()) for i, row in zip(group, scores.reshape(len(group), n_samples))]
    out = dict(gather(sharding, local))
    if sorted(out) != idx:
        raise RuntimeError("gathered evaluation does not cover every test prompt once")
    return np.array([out[i] for i in idx], dtype=float).reshape(len(idx), n_samples)


def gold_on_prompts(study: Study, policy, seed: int, prompts: pd.DataFrame | None = None,
                    n_samples: int | None = None) -> np.ndarray:
    """:func:`gold_on_test` on ``prompts`` (default: the study's test prompts; a frame with ``document`` and
    ``summary``) at the preset's prompt prefix and sampling settings, ``n_samples`` per prompt (default the
    preset's ``eval_samples``), with evaluation stream ``seed``. Shape ``(len(prompts), n_samples)``."""
    p, prompts = study.preset, study.test if prompts is None else prompts
    return gold_on_test(policy, p.prompts(prompts.document), list(prompts.summary),
                        gold=study.gold, seed=int(seed), temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                        n_samples=p.eval_samples if n_samples is None else n_samples, sharding=study.sharding)


def eval_identity(study: Study, seed: int | None) -> dict:
    """What a judgment with run seed ``seed`` depends on but the policy: the test prompts, the sampling settings,
    the human, the batching and the code that samples and scores (:data:`JUDGING_CODE`); ``seed=None``: the
    settings shared by every seed."""
    p = study.preset
    return {"test": study.data_identity.get("test"), "temperature": p.temperature,
            "max_new_tokens": p.max_new_tokens, "samples": p.eval_samples, "seed": None if seed is None else int(seed),
            "gold": study.gold_identity, "streams": study.batching, "code": code_identity(*JUDGING_CODE)}


def eval_key(study: Study, seed: int) -> str:
    """Key of :func:`eval_identity` for ``seed`` (16 hex digits), recorded in every judged row."""
    return sha256_json(eval_identity(study, seed))[:16]


def eval_settings_key(study: Study) -> str:
    """Key of :func:`eval_identity` for every seed: the folder of the judgments made under these settings."""
    return sha256_json(eval_identity(study, None))[:16]
