"""tpo_core.world.policy.Policy on causal LMs: the same exactness tests as the seq2seq policy (sampler against
``generate`` and against a step-by-step forward with the same random numbers, log-probabilities against a direct
forward), on a tiny random Llama built from a config, and a smoke run on the offline SmolLM2-135M."""

import pytest
import torch

from tpo_core.world.policy import Policy, inverse_cdf_sample
from tpo_core.world.policy_config import PolicyConfig

from helpers import build_tiny_llama  # noqa: E402  (tests/helpers.py)

DOCS = ["the cat sat on the mat", "library for python", "a dog is eating food bread and the man sat on a mat", "sky"]
CONFIG = PolicyConfig(name="tiny-llama", max_source_tokens=64, max_target_tokens=8, minilm_init=False)


@pytest.fixture(scope="module")
def policy():
    model, tok = build_tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # a random model is near-uniform; sharpen it so that temperature matters
    return Policy(model, tok, CONFIG)


def _prompt_ids(pol, doc):
    return pol.tokenizer(doc)["input_ids"][-pol.config.max_source_tokens:]


def test_is_causal_and_checks_its_input(policy):
    assert not policy.is_encoder_decoder
    assert policy.tokenizer.pad_token_id is not None
    with pytest.raises(ValueError, match="non-empty sequence"):
        policy.sample([], 2)


def _assert_greedy_is_generate(pol, docs, max_new):
    """Peer oracle: ``generate(do_sample=False)`` on each prompt alone against our batched greedy decoding."""
    for doc, got in zip(docs, pol.greedy(docs, max_new_tokens=max_new)):
        ids = torch.tensor([_prompt_ids(pol, doc)])
        with torch.no_grad():
            out = pol.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=max_new, pad_token_id=pol.tokenizer.pad_token_id)
        assert got == pol.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_greedy_matches_generate(policy):
    """Ours batches prompts of different lengths (left padding with true positions, one prefill, the KV cache)."""
    _assert_greedy_is_generate(policy, DOCS, 8)


def _reference_sample(pol, doc, n, gen, max_new, temperature):
    """The sampler written plainly: no cache, no padding, a full forward per token, and the random numbers the
    policy's sampler consumes for one document (``n`` float64 uniforms per step of its generator)."""
    prompt = _prompt_ids(pol, doc)
    rows, done = [[] for _ in range(n)], [False] * n
    for _ in range(max_new):
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        for j in range(n):
            if done[j]:
                continue
            with torch.no_grad():
                logits = pol.model(input_ids=torch.tensor([prompt + rows[j]])).logits[0, -1].float()
            t = int(inverse_cdf_sample(torch.softmax(logits / temperature, -1)[None], u[j:j + 1])[0])
            rows[j].append(t)
            done[j] = t == pol.tokenizer.eos_token_id
        if all(done):
            break
    return [pol.tokenizer.decode(r, skip_special_tokens=True) for r in rows]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_is_exact_against_a_plain_forward(policy, temperature):
    """Same random numbers, same tokens: the cached, batched, left-padded sampler against a full forward per token."""
    gens = lambda: [torch.Generator().manual_seed(50 + i) for i in range(len(DOCS))]  # noqa: E731
    ours = policy.sample(DOCS, 3, generator=gens(), max_new_tokens=6, temperature=temperature, batch_size=3)
    ref = [_reference_sample(policy, d, 3, g, 6, temperature) for d, g in zip(DOCS, gens())]
    assert ours == ref
    alone = [policy.sample([d], 3, generator=[g], max_new_tokens=6, temperature=temperature)[0]
             for d, g in zip(DOCS, gens())]
    assert alone == ours  # a document's responses do not depend on the others in its batch


def test_sampler_draws_from_the_same_distribution_as_generate(policy):
    """Peer oracle: ``generate(do_sample=True, top_k=0, top_p=1.0)``; a two-sample KS test on the responses'
    log-probabilities does not tell them apart, and rejects our sampler at temperature 1.5 (the test can fail)."""
    from scipy.stats import ks_2samp

    n, doc = 800, DOCS[0]
    ours = policy.sample([doc], n, max_new_tokens=4, seed=3)[0]
    hot = policy.sample([doc], n, max_new_tokens=4, seed=4, temperature=1.5)[0]
    ids = torch.tensor([_prompt_ids(policy, doc)])
    torch.manual_seed(0)  # generate draws from torch's global generator
    with torch.no_grad():
        out = policy.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                    top_p=1.0, temperature=1.0, num_return_sequences=n, max_new_tokens=4,
                                    pad_token_id=policy.tokenizer.pad_token_id)
    theirs = policy.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    with torch.no_grad():
        lp = {k: policy.sequence_logprobs([doc] * n, v).numpy() for k, v in
              (("ours", ours), ("theirs", theirs), ("hot", hot))}
    assert ks_2samp(lp["ours"], lp["theirs"]).pvalue > 1e-3
    assert ks_2samp(lp["hot"], lp["theirs"]).pvalue < 1e-3


def test_sequence_logprobs_match_a_direct_forward(policy):
    resp = ["the cat", " library for", "", "sat"]
    got = policy.sequence_logprobs(DOCS, resp)
    assert got.requires_grad and got.shape == (4,)  # usable by a preference trainer
    eos = policy.tokenizer.eos_token_id
    for doc, r, g in zip(DOCS, resp, got.detach()):
        p = _prompt_ids(policy, doc)
        y = policy.tokenizer(r, add_special_tokens=False)["input_ids"] + [eos]
        with torch.no_grad():
            lp = torch.log_softmax(policy.model(input_ids=torch.tensor([p + y])).logits[0].float(), -1)
        manual = sum(lp[len(p) - 1 + t, y[t]] for t in range(len(y)))
        torch.testing.assert_close(g, manual, rtol=1e-5, atol=1e-4)
    batch = policy.encode(DOCS, resp)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    want = [len(policy.tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in resp]  # + EOS
    assert (batch["labels"] != -100).sum(1).tolist() == want


def test_save_load_and_from_pretrained_round_trip(policy, tmp_path):
    policy.save(tmp_path / "pol")
    loaded = Policy.load(tmp_path / "pol")
    assert not loaded.is_encoder_decoder and loaded.config == CONFIG
    assert loaded.greedy(DOCS, max_new_tokens=5) == policy.greedy(DOCS, max_new_tokens=5)
    wrapped = Policy.from_pretrained(tmp_path / "pol", max_source_tokens=64, max_target_tokens=8)
    assert not wrapped.is_encoder_decoder
    assert wrapped.sample(DOCS, 2, seed=1, max_new_tokens=5) == policy.sample(DOCS, 2, seed=1, max_new_tokens=5)


def test_smollm2_offline_smoke():
    """SmolLM2-135M (the PyPI GGUF, converted once, :func:`tpo_core.world.llm_assets.ensure_llm`) as a policy:
    greedy equals ``generate``, sampling is reproducible, and its log-probabilities are finite."""
    from tpo_core.world.llm_assets import AssetMissingError, ensure_llm

    try:
        folder = ensure_llm("smollm2")
    except AssetMissingError as err:
        pytest.skip(f"the SmolLM2 package is not installed: {err}")
    pol = Policy.from_pretrained(folder, max_source_tokens=48, max_target_tokens=8, name="smollm2")
    docs = ["Package: python3-requests. Description: elegant and simple HTTP library for Python.\nSummary:",
            "Package: htop. Description: interactive processes viewer.\nSummary:"]
    _assert_greedy_is_generate(pol, docs, 6)
    a, b = pol.sample(docs, 2, seed=5, max_new_tokens=6), pol.sample(docs, 2, seed=5, max_new_tokens=6)
    assert a == b and len(a) == 2 and all(len(r) == 2 for r in a)
    with torch.no_grad():
        lp = pol.sequence_logprobs(docs, [r[0] for r in a])
    assert torch.isfinite(lp).all() and (lp < 0).all()
