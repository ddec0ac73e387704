"""tpo_core.tpo.trainer on tiny random T5 and Llama models (built from configs, offline, a few ms per step)."""

import math

import pandas as pd
import pytest
import torch

from tpo_core.study.checkpoints import latest_checkpoint, resume, train_or_load
from tpo_core.tpo.trainer import (LOG_COLUMNS, PreferenceConfig, PreferenceTrainer, make_encode,
                              sequence_logprobs)

WORDS = ("the a cat dog sat on mat is eating food bread man piece of sky blue library for python tool command "
         "line manage packages shared documentation summary short long text").split()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", "<s>", *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")


def tiny_model(kind, tok, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if kind == "t5":
        cfg = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=2,
                       num_heads=2, decoder_start_token_id=tok.pad_token_id, **ids)
        return T5ForConditionalGeneration(cfg)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, **ids)
    return LlamaForCausalLM(cfg)


def make_pairs(n, seed=0, ref_sample=False):
    g = torch.Generator().manual_seed(seed)
    pick = lambda k: " ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist())  # noqa: E731
    pairs = [{"prompt": pick(4 + i % 3), "chosen": "the cat sat on the mat", "rejected": pick(2 + i % 4)}
             for i in range(n)]
    if ref_sample:
        for p in pairs:
            p["ref_sample"] = pick(3)
    return pairs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are fastest on one thread, and do not stall when other jobs share the CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def cfg(**kw):
    base = dict(lr=3e-3, warmup_steps=0, epochs=1, batch_size=2, grad_accum=1, progress=False, seed=0)
    return PreferenceConfig(**{**base, **kw})


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def params_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


# ----------------------------------------------------------------------------------- encoding and log-probs
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_sequence_logprobs_match_the_models_own_loss_and_ignore_padding(tok, kind):
    model = tiny_model(kind, tok).eval()
    enc_dec = kind == "t5"
    encode = make_encode(tok, enc_dec, max_prompt_tokens=8, max_response_tokens=6)
    prompts, responses = ["the cat sat", "a dog is eating food on the mat"], ["blue sky", "the man is eating bread"]
    batch = encode(prompts, responses)
    assert batch["input_ids"].shape == batch["labels"].shape or enc_dec
    n_resp = (batch["labels"] != -100).sum(1)
    assert n_resp.tolist() == [3, 6]  # response tokens + EOS, truncated to 6
    with torch.no_grad():
        both = sequence_logprobs(model, batch, enc_dec)
        for i in range(2):
            one = encode(prompts[i:i + 1], responses[i:i + 1])
            alone = sequence_logprobs(model, one, enc_dec)
            ce = model(**one).loss  # HF mean cross-entropy over the labelled tokens
            assert alone.item() == pytest.approx(-ce.item() * n_resp[i].item(), rel=1e-5)
            assert both[i].item() == pytest.approx(alone.item(), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("kind,k", [("t5", 2), ("llama", 2), ("llama", 3)])
def test_shared_prompts_give_the_same_logprobs_and_gradients(tok, kind, k):
    model = tiny_model(kind, tok).eval()
    prompts = ["the cat sat", "a dog is eating food on the mat", "man"]
    responses = ["blue sky", "the man is eating bread", "a", "tool", "cat sat on mat", "the long text is short",
                 "python", "sky", "command line tool"][:3 * k]
    batch = make_encode(tok, kind == "t5")(prompts * k, responses)
    results = []
    for shared in (1, k):
        model.zero_grad()
        lp = sequence_logprobs(model, batch, kind == "t5", shared)
        (lp * torch.arange(1.0, 1 + len(lp))).sum().backward()
        results.append((lp.detach(), params_grad(model)))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-4)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4)
    with pytest.raises(ValueError, match="share"):
        sequence_logprobs(model, make_encode(tok, kind == "t5")(prompts + prompts[::-1], responses[:6]), kind == "t5", 2)


def test_logits_to_keep_shortcut_changes_nothing(tok):
    model = tiny_model("llama", tok).eval()

    class NoShortcut(torch.nn.Module):  # a causal LM whose forward has no `logits_to_keep`
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, use_cache=False):
            return self.m(input_ids=input_ids, attention_mask=attention_mask)

    batch = make_encode(tok, False)(["the cat", "a dog is eating food on the"], ["sat on the mat", "mat"])
    with torch.no_grad():
        assert torch.allclose(sequence_logprobs(model, batch, False), sequence_logprobs(NoShortcut(model), batch, False),
                              atol=1e-5)


def test_causal_encoding_masks_prompt_and_keeps_its_end(tok):
    enc = make_encode(tok, False, max_prompt_tokens=2, max_response_tokens=3)(["the cat sat"], ["a dog is eating"])
    assert tok.convert_ids_to_tokens(enc["input_ids"][0].tolist()) == ["cat", "sat", "a", "dog", "</s>"]
    assert enc["labels"][0, :2].tolist() == [-100, -100]


# ----------------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_a_few_steps_reduce_the_dpo_loss(tok, kind):
    model = tiny_model(kind, tok)
    pairs = make_pairs(8)
    logs = PreferenceTrainer(model, tok, cfg(epochs=4)).train_iteration(pairs, 0)
    assert list(logs.columns) == list(LOG_COLUMNS) and len(logs) == 16
    first, last = logs.iloc[0], logs.iloc[-1]
    # step 1: π = π_ref (reference = previous iterate, precomputed), so the loss is log 2 and the KL 0
    assert first.loss == pytest.approx(math.log(2), abs=1e-5) and abs(first.implicit_kl) < 1e-4
    assert logs.loss.tail(4).mean() < 0.5 * math.log(2)
    assert last.margin > 0 and last.accuracy == 1.0 and last.chosen_reward > last.rejected_reward


@pytest.mark.parametrize("loss_type", ["ipo", "xpo-authors", "xpo-trl"])
def test_other_losses_train(tok, loss_type):
    model = tiny_model("llama", tok)
    pairs = make_pairs(6, ref_sample=loss_type == "xpo-trl")
    logs = PreferenceTrainer(model, tok, cfg(loss_type=loss_type, epochs=3, ipo_length_normalise=True)
                             ).train_iteration(pairs, 0)
    assert logs.margin.iloc[-1] > 0 and logs.loss.notna().all()
    if loss_type == "ipo":
        assert logs.loss.iloc[0] == pytest.approx(25.0, abs=1e-3)  # (0 − 1/(2β))² at π = π_ref
        assert logs.loss.iloc[-1] < 25.0


def test_xpo_trl_needs_a_reference_sample(tok):
    trainer = PreferenceTrainer(tiny_model("llama", tok), tok, cfg(loss_type="xpo-trl"))
    with pytest.raises(ValueError, match="ref_sample"):
        trainer.train_iteration(make_pairs(2), 0)


def test_config_validation():
    for bad in (dict(loss_type="kto"), dict(reference="sft"), dict(grad_accum=0), dict(beta=0.0)):
        with pytest.raises(ValueError):
            PreferenceConfig(**bad)


def test_loop_is_deterministic_for_a_seed(tok):
    runs = []
    for _ in range(2):
        model = tiny_model("t5", tok, seed=1)
        logs = PreferenceTrainer(model, tok, cfg(epochs=2, seed=7)).train_iteration(make_pairs(6), 3)
        runs.append((logs.drop(columns="seconds"), params(model)))
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0], check_exact=True)
    assert torch.equal(runs[0][1], runs[1][1])
    other = tiny_model("t5", tok, seed=1)
    PreferenceTrainer(other, tok, cfg(epochs=2, seed=8)).train_iteration(make_pairs(6), 3)
    assert not torch.equal(params(other), runs[0][1])  # another seed shuffles differently


def test_gradient_accumulation_equals_a_larger_batch(tok):
    a, b = tiny_model("llama", tok), tiny_model("llama", tok)
    pairs = make_pairs(4)
    la = PreferenceTrainer(a, tok, cfg(batch_size=4, grad_accum=1, max_grad_norm=None)).train_iteration(pairs, 0)
    lb = PreferenceTrainer(b, tok, cfg(batch_size=2, grad_accum=2, max_grad_norm=None)).train_iteration(pairs, 0)
    assert len(la) == len(lb) == 1
    assert torch.allclose(params(a), params(b), atol=1e-6)
    assert la.loss.item() == pytest.approx(lb.loss.item(), rel=1e-5)


def test_reference_initial_keeps_pi0(tok):
    pairs = make_pairs(4)
    kls = {}
    for reference in ("previous", "initial"):
        trainer = PreferenceTrainer(tiny_model("llama", tok), tok, cfg(reference=reference, epochs=2))
        trainer.train_iteration(pairs, 0)
        kls[reference] = trainer.train_iteration(pairs, 1).implicit_kl.iloc[0]
    assert abs(kls["previous"]) < 1e-4  # re-anchored on π_1
    assert abs(kls["initial"]) > 1e-3  # still measured against π_0


# ----------------------------------------------------------------------------------- checkpoints and resume
def test_checkpoints_skip_finished_and_redo_interrupted_iterations(tok, tmp_path, monkeypatch):
    from transformers import T5ForConditionalGeneration

    pairs = {k: make_pairs(4, seed=k) for k in range(2)}
    straight = tiny_model("t5", tok)
    trainer = PreferenceTrainer(straight, tok, cfg())
    expected = {k: train_or_load(trainer, pairs[k], tmp_path / "a", k) for k in range(2)}

    out = tmp_path / "b"
    first = PreferenceTrainer(tiny_model("t5", tok), tok, cfg())
    train_or_load(first, pairs[0], out, 0)
    saved = latest_checkpoint(out)
    assert saved[0] == 0 and {"config.json", "model.safetensors", "logs.csv", "preference_config.json",
                              "tokenizer.json"} <= {p.name for p in saved[1].iterdir()}
    # iteration 1 dies after writing the weights, before its logs and the rename
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train_or_load(first, pairs[1], out, 1)
    monkeypatch.undo()
    assert latest_checkpoint(out)[0] == 0 and not (out / "iter_1").exists() and not list(out.glob(".iter_1.tmp*"))
    (out / ".iter_1.tmp-killed").mkdir()  # what a SIGKILL during the save leaves behind
    (out / ".iter_1.tmp-killed" / "model.safetensors").write_bytes(b"half")

    # a new process: fresh random model, resume, call every iteration again
    resumed = PreferenceTrainer(tiny_model("t5", tok, seed=5), tok, cfg())
    assert resume(resumed, out) == 0
    assert torch.equal(params(resumed.model), params(T5ForConditionalGeneration.from_pretrained(out / "iter_0")))
    calls = []
    monkeypatch.setattr(resumed, "reference_logprobs", lambda p, f=resumed.reference_logprobs: calls.append(1) or f(p))
    logs0 = train_or_load(resumed, pairs[0], out, 0)  # finished: skipped, logs read back
    assert calls == []
    pd.testing.assert_frame_equal(logs0.drop(columns="seconds"), expected[0].drop(columns="seconds"),
                                  check_exact=False)
    logs1 = train_or_load(resumed, pairs[1], out, 1)  # interrupted: redone cleanly
    assert calls == [1] and not list(out.glob(".iter_*.tmp*"))
    assert latest_checkpoint(out)[0] == 1
    pd.testing.assert_frame_equal(logs1.drop(columns="seconds"), expected[1].drop(columns="seconds"))
    assert torch.equal(params(resumed.model), params(straight))
    assert resume(PreferenceTrainer(tiny_model("t5", tok), tok, cfg()), tmp_path / "empty") is None


def test_partial_accumulation_groups_and_log_every(tok):
    # 5 pairs, 2 per micro-batch -> 3 micro-batches -> 2 optimizer steps per epoch (the last one partial)
    logs = PreferenceTrainer(tiny_model("llama", tok), tok, cfg(batch_size=2, grad_accum=2, epochs=2, log_every=2,
                                                                warmup_steps=1)).train_iteration(make_pairs(5), 0)
    assert logs.step.tolist() == [2, 4] and logs.epoch.tolist() == [0, 1]
    assert logs.lr.iloc[0] == pytest.approx(3e-3)  # lr of step 2: warm-up over, cosine just started


def test_bench_smoke(tmp_path):
    from tpo_core.commands import bench

    out = bench.main(["--tiny", "--out", str(tmp_path / "bench.csv"), "--pairs", "2", "--prompt-tokens", "6",
                      "--response-tokens", "3", "--steps", "1", "--rounds", "1"])
    saved = pd.read_csv(tmp_path / "bench.csv")
    assert len(saved) == len(out) == 4 and saved.speedup_vs_trl.iloc[0] == 1.0
    assert (saved.pairs_per_s > 0).all() and (saved.fraction_of_matmul_peak > 0).all()
