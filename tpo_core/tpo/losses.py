"""Preference-optimisation losses of empirical TPO's ``Alg_PO`` (paper §5, Alg. 3 step "policy optimisation").

Pure functions on **per-sequence log-probabilities summed over the response tokens** (the TRL default that
the authors' code used). Every function takes tensors of shape ``(batch,)``:

* ``pol_chosen``, ``pol_rejected``: ``log π_θ(y_w|x)``, ``log π_θ(y_l|x)`` under the policy being trained;
* ``ref_chosen``, ``ref_rejected``: ``log π_ref(y_w|x)``, ``log π_ref(y_l|x)`` under the reference policy,

and returns ``(losses, chosen_rewards, rejected_rewards)``: the **per-pair** losses (the training loss is
their mean) and the implicit rewards ``β·(log π_θ − log π_ref)`` of each response, detached (as TRL logs them).

* :func:`dpo_loss`: ``−log σ(β·h)``, ``h = [log π(y_w) − log π(y_l)] − [log π_ref(y_w) − log π_ref(y_l)]``;
* :func:`ipo_loss`: ``(h − 1/(2β))²`` (the authors: summed log-probs; TRL 1.x: log-probs averaged per token);
* :func:`xpo_loss_authors`: ``dpo − α·½(log π(y_w) + log π(y_l))``, a likelihood bonus on the labelled pair;
* :func:`xpo_loss_trl`: ``dpo + α·log π(ã)`` with ``ã ~ π_ref``, Xie et al.'s exploration term as TRL codes it.

Each function names the code it reproduces; ``tests/test_losses.py`` checks them against closed forms and
against TRL 1.13's own loss code on the same log-probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSS_TYPES", "dpo_loss", "ipo_loss", "xpo_loss_authors", "xpo_loss_trl"]

LOSS_TYPES = ("dpo", "ipo", "xpo-authors", "xpo-trl")


def _rewards(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta):
    chosen_logratios = pol_chosen - ref_chosen
    rejected_logratios = pol_rejected - ref_rejected
    return chosen_logratios, rejected_logratios, (beta * chosen_logratios.detach(),
                                                  beta * rejected_logratios.detach())


def dpo_loss(pol_chosen: torch.Tensor, pol_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1):
    """DPO, sigmoid loss (Rafailov et al. 2023, Eq. 7): ``−log σ(β·h)`` per pair.

    ``h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)]``. The authors use TRL 0.7.10's
    ``DPOTrainer.dpo_loss`` with ``loss_type="sigmoid"``, ``label_smoothing=0``, ``β=0.1``
    (RLHF_RewardTransfer ``train_iteration/dpo.py``); TRL 1.13 computes the same thing inline in
    ``trl/trainer/dpo_trainer.py::DPOTrainer._compute_loss`` (``loss_type == "sigmoid"``) and in
    ``trl/losses/dpo_loss.py::FusedLinearDPOFunction.preference_loss_fn``.
    """
    cl, rl, (cr, rr) = _rewards(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta)
    return -F.logsigmoid(beta * (cl - rl)), cr, rr


def ipo_loss(pol_chosen: torch.Tensor, pol_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, chosen_lengths: torch.Tensor | None = None,
             rejected_lengths: torch.Tensor | None = None):
    """IPO (Azar et al. 2024, Eq. 17 with ``τ = β``): ``(h − 1/(2β))²`` per pair.

    **Default (the authors', and what tpo_core trains with):** ``h`` from log-probabilities *summed* over
    the response, as in RLHF_RewardTransfer ``dpo_iteration/ipo.py::IPO.ipo_loss`` (``(logits −
    1/(2β))²``), whose log-probs come from TRL 0.7.10's ``DPOTrainer.concatenated_forward``, which calls
    ``get_batch_logps(..., average_log_prob=False)`` for every loss type (checked in the 0.7.10 wheel). With
    β = 0.1 the target margin is 5 nats.

    **TRL 1.13's variant:** pass ``chosen_lengths`` / ``rejected_lengths`` (response token counts) and each
    log-ratio is divided by its length first, i.e. ``h`` uses per-token *average* log-probs, as in
    ``trl/trainer/dpo_trainer.py::DPOTrainer._compute_loss`` (``loss_type == "ipo"``). The rewards returned
    are always the un-normalised ``β·(log π − log π_ref)``.
    """
    cl, rl, (cr, rr) = _rewards(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta)
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("pass both chosen_lengths and rejected_lengths, or neither")
    if chosen_lengths is not None:
        cl = cl / chosen_lengths.to(cl.dtype).clamp(min=1.0)
        rl = rl / rejected_lengths.to(rl.dtype).clamp(min=1.0)
    return (cl - rl - 1.0 / (2.0 * beta)) ** 2, cr, rr


def xpo_loss_authors(pol_chosen: torch.Tensor, pol_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                     ref_rejected: torch.Tensor, beta: float = 0.1, alpha: float = 1e-2):
    """The authors' "XPO": DPO **minus** ``α·½(log π(y_w) + log π(y_l))`` per pair.

    RLHF_RewardTransfer ``train_iteration/xpo.py::XPO.xpo_loss`` (commit 4bd3d7b) computes
    ``losses.mean() − α·(policy_chosen_logps.mean() + policy_rejected_logps.mean())/2`` with summed
    log-probs and ``α = 1e-2``; the per-pair losses returned here have exactly that mean. The extra term is a
    likelihood *bonus* on the labelled (offline) pair; it is not Xie et al.'s exploration term (see
    :func:`xpo_loss_trl`, after TRL's ``XPOTrainer``).
    """
    losses, cr, rr = dpo_loss(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta)
    return losses - alpha * 0.5 * (pol_chosen + pol_rejected), cr, rr


def xpo_loss_trl(pol_chosen: torch.Tensor, pol_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                 ref_rejected: torch.Tensor, beta: float = 0.1, ref_sample_logps: torch.Tensor | None = None,
                 alpha: float = 1e-2):
    """XPO as Xie et al. (2024, Alg. 1) and TRL: DPO **plus** ``α·log π_θ(ã|x)`` per pair, ``ã ~ π_ref(·|x)``.

    ``ref_sample_logps`` is the *policy's* summed log-probability of a response sampled from the reference
    policy for the same prompt. Minimising ``+α·log π(ã)`` pushes mass away from what the reference already
    does (optimism / exploration). Matches TRL 1.13
    ``trl/experimental/xpo/xpo_trainer.py::XPOTrainer._compute_losses``: ``xpo_losses = alpha *
    model_logprobs_ref_data_sum`` and ``loss = (dpo_losses + xpo_losses).mean()`` (TRL's default α is 1e-5;
    tpo_core keeps the authors' 1e-2). TRL's DPO pair is (policy sample, reference sample) ranked by the
    reward; here it is whatever labelled pair the caller passes.
    """
    if ref_sample_logps is None:
        raise ValueError("xpo_loss_trl needs ref_sample_logps: log π_θ of a sample from the reference policy")
    losses, cr, rr = dpo_loss(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta)
    return losses + alpha * ref_sample_logps, cr, rr
