"""Response log-probabilities ``log π(y | x)`` (paper Eq. 3's DPO terms, the log-probability sources):
one implementation for encoder-decoder and causal models, used by the policy, the trainer and both
log-probability sources.

* :func:`make_encode` turns (prompt, response) pairs into right-padded ``input_ids`` / ``attention_mask`` and
  −100-masked ``labels``; :func:`pad` is its padding.
* :func:`sequence_logprobs` sums the labelled tokens' log-probabilities (optionally running shared prompts
  once); :func:`token_logprobs` is the per-token gather both it and the prefix-cached LLM source use.
* :func:`cache_keyword` is the transformers 4/5 shim for the KV-cache keyword (``past_key_values`` / ``cache``).

A leaf module (it imports nothing from ``tpo_core``).
"""

from __future__ import annotations

import inspect

import torch

__all__ = ["pad", "make_encode", "sequence_logprobs", "token_logprobs", "summed_logprobs", "cache_keyword",
           "accepts"]


def pad(rows, value: int) -> torch.Tensor:
    """Right-pad the integer sequences ``rows`` with ``value`` to their longest: int64 ``(len(rows), width)``."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def accepts(model, *names) -> bool:
    """Whether ``model.forward`` (of the module inside a DDP wrapper) takes every keyword in ``names``."""
    try:
        params = inspect.signature(getattr(model, "module", model).forward).parameters
    except (TypeError, ValueError):
        return False
    return all(name in params for name in names)


def cache_keyword(model) -> str | None:
    """The KV-cache keyword of ``model.forward``: ``"cache"`` (recent transformers 5.x), ``"past_key_values"``
    (earlier), or ``None``; its output attribute has the same name."""
    return next((a for a in ("cache", "past_key_values") if accepts(model, a)), None)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[label]`` per position, fp32, shape of ``labels`` (``(B, T)``; −100 positions give
    the log-probability of token 0, to be masked by the caller)."""
    logits = logits.float()
    return logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def summed_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of :func:`token_logprobs` over the labelled (≠ −100) positions, shape ``(B,)``."""
    return (token_logprobs(logits, labels) * (labels != -100)).sum(-1)


def make_encode(tokenizer, is_encoder_decoder: bool, max_prompt_tokens: int = 1000, max_response_tokens: int = 256):
    """``encode(prompts, responses) -> {input_ids, attention_mask, labels}`` (right-padded, labels −100-masked).

    Prompts are tokenized with the tokenizer's special tokens, responses without them plus EOS, separately, so
    the prompt/response boundary never moves. Encoder-decoder: ``input_ids`` = prompt (truncated by the
    tokenizer, keeping the start), ``labels`` = response. Causal: ``input_ids`` = prompt (last
    ``max_prompt_tokens``) + response, ``labels`` = the same with the prompt and padding set to −100.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]

    def encode(prompts, responses):
        if is_encoder_decoder:
            p_ids = tokenizer(list(prompts), truncation=True, max_length=max_prompt_tokens)["input_ids"]
        else:
            p_ids = [p[-max_prompt_tokens:] for p in tokenizer(list(prompts))["input_ids"]]
        r_ids = [r[:max_response_tokens - len(eos)] + eos
                 for r in tokenizer(list(responses), add_special_tokens=False)["input_ids"]]
        if is_encoder_decoder:
            return {"input_ids": pad(p_ids, pad_id), "attention_mask": pad([[1] * len(p) for p in p_ids], 0),
                    "labels": pad(r_ids, -100)}
        seqs = [p + r for p, r in zip(p_ids, r_ids)]
        return {"input_ids": pad(seqs, pad_id), "attention_mask": pad([[1] * len(s) for s in seqs], 0),
                "labels": pad([[-100] * len(p) + r for p, r in zip(p_ids, r_ids)], -100)}

    return encode


def sequence_logprobs(model, batch: dict, is_encoder_decoder: bool, shared_prompts: int = 1) -> torch.Tensor:
    """Summed log-probability of the labelled (≠ −100) tokens of each row: ``log π(y|x)``, shape ``(B,)``, fp32.

    ``shared_prompts=k`` promises that the rows are k blocks repeating the same prompts (the trainer's
    ``[chosen; rejected(; reference sample)]`` layout). The prompts then go through the model once and are
    reused by the k responses (T5: the encoder output is repeated; causal: the responses continue from the
    prompts' KV cache): the same log-probs for fewer FLOPs. Causal models that accept ``logits_to_keep`` build
    LM-head logits only where a response token is predicted. DDP-wrapped models take the plain path.
    """
    labels, ids, mask = batch["labels"], batch["input_ids"], batch["attention_mask"]
    base = getattr(model, "module", model)
    k = 1 if isinstance(model, torch.nn.parallel.DistributedDataParallel) else shared_prompts
    if is_encoder_decoder:
        dec = ({"decoder_input_ids": base.prepare_decoder_input_ids_from_labels(labels=labels)}
               if hasattr(base, "prepare_decoder_input_ids_from_labels") else {"labels": labels})
        if k > 1 and hasattr(base, "get_encoder"):
            n = ids.shape[0] // k
            if not torch.equal(ids.view(k, n, -1), ids[:n].expand(k, -1, -1)):
                raise ValueError("shared_prompts: the k blocks of rows do not share their prompts")
            hidden = base.get_encoder()(input_ids=ids[:n], attention_mask=mask[:n]).last_hidden_state
            logits = model(encoder_outputs=(hidden.repeat(k, 1, 1),), attention_mask=mask, use_cache=False, **dec)
        else:
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **dec)
        return summed_logprobs(logits.logits, labels)
    cache_arg = cache_keyword(model)
    first = (labels != -100).int().argmax(1)  # first labelled position = prompt length
    if k > 1 and cache_arg and accepts(model, "logits_to_keep", "position_ids") and int(first.min()) > 0:
        return _causal_shared_prompt(model, ids, mask, labels, k, cache_arg)
    start = int(first.min().clamp(min=1)) - 1  # first position predicting a label
    if accepts(model, "logits_to_keep"):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=ids.shape[1] - start)
        logits = logits.logits[:, :-1]
    else:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, start:-1]
    return summed_logprobs(logits, labels[:, start + 1:])


def _causal_shared_prompt(model, ids, mask, labels, k, cache_arg):
    """Causal rows ``[prompt | response | pad]`` in k blocks of the same prompts: run the n prompts once
    (left-padded, true positions), then all responses on the prompts' KV cache, with their true positions."""
    n, width, dev = ids.shape[0] // k, ids.shape[1], ids.device
    plen = (labels != -100).int().argmax(1)  # prompt length of each row
    prompt_tokens = (ids * ((labels == -100) & (mask == 1))).view(k, n, width)
    if not torch.equal(prompt_tokens, prompt_tokens[:1].expand(k, -1, -1)):
        raise ValueError("shared_prompts: the k blocks of rows do not share their prompts")
    p_len = plen[:n]
    col = torch.arange(int(p_len.max()), device=dev) - (int(p_len.max()) - p_len)[:, None]  # <0: left pad
    p_mask = (col >= 0).long()
    out = model(input_ids=ids[:n].gather(1, col.clamp(min=0)) * p_mask, attention_mask=p_mask,
                position_ids=col.clamp(min=0), use_cache=True, logits_to_keep=1)
    cache = out[cache_arg]
    cache.batch_repeat_interleave(k)  # prompt b -> rows b*k ... b*k + k-1
    order = (torch.arange(n, device=dev)[:, None] + n * torch.arange(k, device=dev)).flatten()  # row of b*k + c
    r_len = mask.sum(1) - plen
    pos = (plen[:, None] + torch.arange(int(r_len.max()), device=dev))[order]  # true positions of responses
    r_mask = (pos - plen[order, None] < r_len[order, None]).long()
    r_ids = ids[order].gather(1, pos.clamp(max=width - 1)) * r_mask
    r_labels = labels[order].gather(1, pos.clamp(max=width - 1)).masked_fill(r_mask == 0, -100)
    out2 = model(input_ids=r_ids, attention_mask=torch.cat([p_mask.repeat_interleave(k, 0), r_mask], 1),
                 position_ids=pos, use_cache=True, **{cache_arg: cache})
    logits = torch.cat([out.logits[:, -1:].repeat_interleave(k, 0), out2.logits[:, :-1]], 1)  # token 0 from prompt
    return summed_logprobs(logits, r_labels)[torch.argsort(order)]
