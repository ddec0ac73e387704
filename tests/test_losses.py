"""tpo_core.tpo.losses against closed forms and against TRL 1.13's own loss code on the same log-probabilities.

TRL has no stand-alone sigmoid/IPO function in 1.13: both are inline in ``DPOTrainer._compute_loss`` (which
starts from the model's logits) and the sigmoid one also in the static
``trl.losses.dpo_loss.FusedLinearDPOFunction.preference_loss_fn``. We call ``_compute_loss`` unbound with a
minimal stub ``self`` (the nine attributes it reads) and a fake model whose logits are built so that the
per-token log-probs of each completion sum to the wanted sequence log-prob, with reference log-probs passed
as precomputed. XPO is checked against ``XPOTrainer._compute_losses`` (reads ``args.loss_type``, ``beta``,
``alpha``) called with a stub ``self``.
"""

import math
import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from tpo_core.tpo.losses import dpo_loss, ipo_loss, xpo_loss_authors, xpo_loss_trl

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

BETA = 0.1


@pytest.fixture(scope="module")
def logps():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-(torch.rand(6, generator=g, dtype=torch.float64) * 30 + 1) for _ in range(4))
    lens_c = torch.tensor([1, 3, 5, 2, 7, 4])
    lens_r = torch.tensor([2, 2, 6, 1, 3, 8])
    return pc, pr, rc, rr, lens_c, lens_r


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


# ------------------------------------------------------------------------------------------- closed forms
def test_dpo_closed_form():
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (-3.0, -5.0, -4.0, -4.5))
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, BETA)
    h = (-3.0 + 4.0) - (-5.0 + 4.5)  # 1.5
    assert losses.item() == pytest.approx(-math.log(_sig(BETA * h)), rel=1e-12)
    assert cr.item() == pytest.approx(0.1) and rj.item() == pytest.approx(-0.05)
    # at π = π_ref the loss is log 2 whatever the log-probs
    assert torch.allclose(dpo_loss(pc, pr, pc, pr, BETA)[0], torch.tensor([math.log(2.0)], dtype=torch.float64))


def test_ipo_closed_form(logps):
    pc, pr, rc, rr, lc, lr = logps
    h = (pc - pr) - (rc - rr)
    assert torch.allclose(ipo_loss(pc, pr, rc, rr, BETA)[0], (h - 5.0) ** 2)
    h_avg = (pc - rc) / lc - (pr - rr) / lr
    assert torch.allclose(ipo_loss(pc, pr, rc, rr, BETA, lc, lr)[0], (h_avg - 5.0) ** 2)
    # minimised (zero) exactly at h = 1/(2β)
    assert ipo_loss(torch.tensor([0.0]), torch.tensor([-5.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                    BETA)[0].item() == 0.0
    with pytest.raises(ValueError):
        ipo_loss(pc, pr, rc, rr, BETA, lc, None)


def test_xpo_authors_matches_their_formula(logps):
    pc, pr, rc, rr, *_ = logps
    alpha = 1e-2
    losses, _, _ = xpo_loss_authors(pc, pr, rc, rr, BETA, alpha)
    dpo = -torch.nn.functional.logsigmoid(BETA * ((pc - pr) - (rc - rr)))
    # RLHF_RewardTransfer train_iteration/xpo.py: losses.mean() - alpha * (chosen.mean() + rejected.mean()) / 2
    assert losses.mean().item() == pytest.approx((dpo.mean() - alpha * (pc.mean() + pr.mean()) / 2).item(), rel=1e-12)


def test_gradients_have_the_documented_signs():
    pc, pr = torch.tensor([-3.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    ref_c, ref_r, alpha = torch.tensor([-4.0]), torch.tensor([-4.5]), 0.01
    sample = torch.tensor([-6.0], requires_grad=True)
    dpo_grad = -BETA * _sig(-BETA * 1.5)  # d(-log σ(βh))/d pc
    xpo_loss_authors(pc, pr, ref_c, ref_r, BETA, alpha)[0].sum().backward()
    assert pc.grad.item() == pytest.approx(dpo_grad - alpha / 2, rel=1e-6)  # bonus on log π(y_w)
    assert pr.grad.item() == pytest.approx(-dpo_grad - alpha / 2, rel=1e-6)  # ... and on log π(y_l)
    xpo_loss_trl(pc.detach(), pr.detach(), ref_c, ref_r, BETA, sample, alpha)[0].sum().backward()
    assert sample.grad.item() == pytest.approx(alpha)  # + α log π(ã): minimising pushes log π(ã) down
    with pytest.raises(ValueError):
        xpo_loss_trl(pc, pr, ref_c, ref_r, BETA, None, alpha)


# ------------------------------------------------------------------------------------------- against TRL
class _FakeLM(torch.nn.Module):
    """Returns fixed logits (vocab 2; every target token is id 0)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, **kwargs):
        return SimpleNamespace(logits=self.logits)


def _trl_dpo_inputs(seq_logps, lengths):
    """Batch [chosen; rejected] with 1 prompt token then ``lengths[i]`` completion tokens of total log-prob
    ``seq_logps[i]``, right-padded; logits [0, c] give token 0 the log-prob −log(1 + e^c)."""
    n, width = len(seq_logps), 1 + int(lengths.max())
    logits = torch.zeros(n, width, 2, dtype=torch.float64)
    completion_mask = torch.zeros(n, width, dtype=torch.long)
    for i, (lp, k) in enumerate(zip(seq_logps.tolist(), lengths.tolist())):
        completion_mask[i, 1:1 + k] = 1
        logits[i, :k, 1] = math.log(math.expm1(-lp / k))  # position t predicts token t + 1
    attention_mask = completion_mask.clone()
    attention_mask[:, 0] = 1
    inputs = {"input_ids": torch.zeros(n, width, dtype=torch.long), "completion_mask": completion_mask,
              "attention_mask": attention_mask}
    return _FakeLM(logits), inputs


def _trl_dpo_loss(loss_type, pc, pr, rc, rr, lc, lr):
    from accelerate import Accelerator
    from trl import DPOTrainer

    stub = SimpleNamespace(model=SimpleNamespace(training=True), accelerator=Accelerator(cpu=True),
                           aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
                           f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=BETA,
                           label_smoothing=0.0, use_weighting=False,
                           _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    model, inputs = _trl_dpo_inputs(torch.cat([pc, pr]), torch.cat([lc, lr]))
    inputs.update(ref_chosen_logps=rc, ref_rejected_logps=rr)
    loss = DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)
    return loss, stub._metrics["train"]


def test_fake_model_reproduces_the_wanted_logps(logps):
    from trl.trainer.utils import selective_log_softmax

    pc, _, _, _, lc, _ = logps
    model, inputs = _trl_dpo_inputs(pc, lc)
    tok = selective_log_softmax(model.logits[:, :-1], inputs["input_ids"][:, 1:])
    assert torch.allclose((tok * inputs["completion_mask"][:, 1:]).sum(1), pc)


def test_dpo_equals_trl_dpo_trainer(logps):
    pc, pr, rc, rr, lc, lr = logps
    ours, cr, rj = dpo_loss(pc, pr, rc, rr, BETA)
    trl_loss, metrics = _trl_dpo_loss("sigmoid", pc, pr, rc, rr, lc, lr)
    assert trl_loss.item() == pytest.approx(ours.mean().item(), rel=1e-9)
    assert metrics["rewards/chosen"][0] == pytest.approx(cr.mean().item(), rel=1e-9)
    assert metrics["rewards/margins"][0] == pytest.approx((cr - rj).mean().item(), rel=1e-9)


def test_dpo_equals_trl_fused_preference_loss_fn(logps):
    from trl.losses.dpo_loss import FusedLinearDPOFunction

    pc, pr, rc, rr, *_ = logps
    loss, cr, rj = FusedLinearDPOFunction.preference_loss_fn(pc, pr, torch.zeros(2 * len(pc)), rc, rr, beta=BETA)
    ours, our_cr, our_rj = dpo_loss(pc, pr, rc, rr, BETA)
    assert loss.item() == pytest.approx(ours.mean().item(), rel=1e-12)
    assert torch.allclose(torch.as_tensor(cr).mean(), our_cr.mean())


def test_ipo_length_normalised_equals_trl_dpo_trainer(logps):
    pc, pr, rc, rr, lc, lr = logps
    trl_loss, _ = _trl_dpo_loss("ipo", pc, pr, rc, rr, lc, lr)
    ours = ipo_loss(pc, pr, rc, rr, BETA, lc, lr)[0].mean()
    assert trl_loss.item() == pytest.approx(ours.item(), rel=1e-9)
    # ... and differs from the authors' summed form on the same inputs (so the switch matters)
    assert abs(ipo_loss(pc, pr, rc, rr, BETA)[0].mean().item() - ours.item()) > 1.0


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_xpo_trl_equals_trl_xpo_trainer(logps, loss_type):
    from trl.experimental.xpo import XPOTrainer

    pm, pref_, rm, rref, *_ = logps  # policy / reference log-probs of the policy sample and the ref sample
    chosen_mask = torch.tensor([True, False, True, True, False, True])  # policy sample preferred?
    alpha = 3e-3
    stub = SimpleNamespace(args=SimpleNamespace(loss_type=loss_type), beta=BETA, alpha=alpha)
    col = lambda t: t.unsqueeze(1)  # per-token tensors with a single token each  # noqa: E731
    trl_loss, _, _ = XPOTrainer._compute_losses(stub, col(pm), col(pref_), col(rref), col(rm), chosen_mask)
    w = lambda a, b: torch.where(chosen_mask, a, b)  # noqa: E731
    args = (w(pm, pref_), w(pref_, pm), w(rm, rref), w(rref, rm), BETA)
    if loss_type == "sigmoid":
        ours = xpo_loss_trl(*args, ref_sample_logps=pref_, alpha=alpha)[0]
    else:  # TRL's XPO IPO uses summed log-probs: our default IPO + the same exploration term
        ours = ipo_loss(*args)[0] + alpha * pref_
    assert trl_loss.item() == pytest.approx(ours.mean().item(), rel=1e-12)
