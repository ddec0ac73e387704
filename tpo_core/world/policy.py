"""The starting policy ``pi_0`` of the ``embedded`` preset: a small T5 trained once by SFT and cached.

The paper fine-tunes T5-small; no pretrained T5 weights can be loaded offline (they are on the Hugging Face Hub only),
so ``pi_0`` is a **T5 architecture** (:class:`transformers.T5ForConditionalGeneration`: relative
position buckets, RMS norm, ReLU FFN, tied input/output embeddings) trained here by supervised
fine-tuning on the ``sft`` split of the Debian descriptions (:func:`tpo_core.world.data.load_debian`).

Recipe of :data:`tpo_core.world.policy_config.EMBEDDED` (1.9M parameters: d_model 128, 3 encoder + 2 decoder layers):

* a cased BPE tokenizer (8k entries, Metaspace pre-tokenizer like T5's SentencePiece) trained offline
  on the SFT documents and synopses in a few seconds;
* documents truncated to their first 32 tokens (the synopsis mostly restates the opening sentence:
  54 % of its words occur there, 58 % within 48 tokens), so a step is cheap and SFT covers several epochs;
* the shared token embeddings initialised from **all-MiniLM-L6-v2**'s word-piece embeddings (each BPE
  entry gets the mean of its word pieces, projected by PCA to ``d_model``): lexical knowledge from a
  pretrained encoder carried into a randomly initialised T5 (:func:`tpo_core.world.assets.minilm_path`);
* AdamW with warm-up and cosine decay over a fixed number of steps (not wall time, so reruns agree).

:func:`tpo_core.world.sft.train_sft` trains it once (the recipe: :func:`tpo_core.world.sft_recipe.fit`) and caches it, keyed by
the configuration, the training data's sha256, the recipe's code and the MiniLM files. :class:`Policy` wraps model, tokenizer and config, and offers sampling
(seeded with an explicit ``torch.Generator``), greedy decoding, and what a preference trainer needs
(:meth:`Policy.encode`, :meth:`Policy.sequence_logprobs`).

:class:`Policy` also wraps a **causal** LM (``AutoModelForCausalLM``: Llama, Qwen, SmolLM): the response then
continues the prompt, which keeps its last ``max_source_tokens`` tokens; the sampler runs the prompts once
(left-padded, with their true positions) and draws every response token from the KV cache, with the same
random numbers per token as the seq2seq sampler (:meth:`Policy.sample`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from tpo_core.plumbing.provenance import record_checksums, verify_checksums
from tpo_core.plumbing.common import quiet_loading
from tpo_core.tpo.logprobs import accepts, cache_keyword, make_encode, sequence_logprobs
from tpo_core.world.policy_config import PolicyConfig

__all__ = ["Policy", "inverse_cdf_sample"]

def _check_texts(documents, what: str = "documents") -> list[str]:
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise ValueError(f"{what} must be a non-empty sequence of strings")
    documents = list(documents)
    if not documents or not all(isinstance(d, str) for d in documents):
        raise ValueError(f"{what} must be a non-empty sequence of strings")
    return documents


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` ``(rows, vocab)`` by inversion: the first index whose cumulative
    probability exceeds ``u * total`` for the row's uniform ``u`` in ``[0, 1)`` (``uniforms``: ``(rows,)``).

    Exactly categorical sampling (a zero-probability token is never drawn); cumulative sums in float64.
    Returns int64 ``(rows,)``.
    """
    cdf = probs.double().cumsum(-1)
    x = uniforms.double().reshape(-1, 1) * cdf[:, -1:]
    return torch.searchsorted(cdf, x, right=True).clamp_(max=probs.shape[-1] - 1).squeeze(-1)


def _streams(generator, n_documents: int):
    """``None`` (greedy), one ``torch.Generator`` for all documents, or a list of one per document."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    gens = list(generator)
    if len(gens) != n_documents or not all(isinstance(g, torch.Generator) for g in gens):
        raise ValueError(f"generator must be a torch.Generator or a sequence of one per document "
                         f"({n_documents}), got {len(gens)} items")
    return gens


def _uniforms(streams, lo: int, hi: int, n: int) -> torch.Tensor:
    """``n`` float64 uniforms for each document ``lo..hi-1`` of the call, shape ``((hi - lo) * n,)``,
    document-major: from the shared generator, or from each document's own."""
    if isinstance(streams, torch.Generator):
        return torch.rand((hi - lo) * n, generator=streams, dtype=torch.float64, device=streams.device)
    return torch.cat([torch.rand(n, generator=g, dtype=torch.float64, device=g.device).cpu()
                      for g in streams[lo:hi]])


def _next_tokens(logits: torch.Tensor, streams, start: int, n_docs: int, n: int, temperature: float) -> torch.Tensor:
    """The next token of each of the ``n_docs * n`` rows (document-major) from their last ``logits``
    ``(rows, vocab)``: arg-max when ``streams`` is None, else one uniform per row (:func:`_uniforms`) inverted
    through the softmax at ``temperature`` (:func:`inverse_cdf_sample`). Returns int64 ``(rows,)``."""
    if streams is None:
        return logits.argmax(-1)
    u = _uniforms(streams, start, start + n_docs, n).to(logits.device)
    return inverse_cdf_sample(torch.softmax(logits / temperature, -1), u)


class Policy:
    """``pi_0`` (or any policy fine-tuned from it): a model, its tokenizer and its :class:`PolicyConfig`.

    Responses are plain strings. The model is a seq2seq ``T5ForConditionalGeneration`` (the document is the
    encoder's input) or a causal LM (the response continues the document; :attr:`is_encoder_decoder` is then
    False); preference trainers can optimise ``policy.model`` directly, using :meth:`encode` for the tensors
    or :meth:`sequence_logprobs` for differentiable sequence log-probabilities.
    """

    def __init__(self, model, tokenizer, config: PolicyConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        if not self.is_encoder_decoder and tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked everywhere; causal LMs often have none

    @property
    def is_encoder_decoder(self) -> bool:
        """True for a seq2seq model (T5), False for a causal LM."""
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    # --- tensors -------------------------------------------------------------------------------------
    def _sources(self, documents: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(documents), truncation=True, max_length=self.config.max_source_tokens,
                                   padding=True, return_tensors="pt"))

    def encode(self, documents: Sequence[str], responses: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` (documents) and ``labels`` (responses + EOS, padded with -100).

        Documents are truncated to ``max_source_tokens``, responses to ``max_target_tokens``. A causal policy
        gets :func:`tpo_core.tpo.logprobs.make_encode`'s layout instead: ``input_ids`` = the document's last
        ``max_source_tokens`` tokens followed by the response, ``labels`` −100 on the document and padding.
        """
        documents, responses = _check_texts(documents), _check_texts(responses, "responses")
        if len(documents) != len(responses):
            raise ValueError(f"{len(documents)} documents but {len(responses)} responses")
        if not self.is_encoder_decoder:
            return make_encode(self.tokenizer, False, self.config.max_source_tokens,
                               self.config.max_target_tokens)(documents, responses)
        batch = self._sources(documents)
        labels = self.tokenizer(responses, truncation=True, max_length=self.config.max_target_tokens,
                                padding=True, return_tensors="pt")
        batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
        return batch

    def sequence_logprobs(self, documents: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Sum over tokens (EOS included) of ``log pi(y_t | x, y_<t)`` for each pair, shape ``(n,)``.

        Differentiable when autograd is enabled (wrap in ``torch.no_grad()`` for scoring). The model's
        current train/eval mode is used as is.
        """
        batch = {k: v.to(self.device) for k, v in self.encode(documents, responses).items()}
        return sequence_logprobs(self.model, batch, is_encoder_decoder=self.is_encoder_decoder)

    # --- decoding ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model's weights are (decoding and log-probabilities run there)."""
        return next(self.model.parameters()).device

    def to(self, device) -> "Policy":
        """Move the model to ``device`` (e.g. ``"cuda:0"``); returns ``self``."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def _decode(self, documents, n: int, *, temperature: float, max_new_tokens: int | None,
                generator, batch_size: int) -> list[list[str]]:
        documents = _check_texts(documents)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        max_new = self.config.max_target_tokens if max_new_tokens is None else max_new_tokens
        if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new!r}")
        if generator is not None and not (temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        streams = _streams(generator, len(documents))
        if not self.is_encoder_decoder:
            return self._decode_causal(documents, n, temperature=temperature, max_new=max_new, streams=streams,
                                       batch_size=batch_size)
        dev, cache_kw = self.device, cache_keyword(self.model)
        was_training = self.model.training
        self.model.eval()
        out: list[list[str]] = []
        try:
            for start in range(0, len(documents), batch_size):
                src = {k: v.to(dev) for k, v in self._sources(documents[start:start + batch_size]).items()}
                enc = self.model.get_encoder()(**src).last_hidden_state
                rows = enc.shape[0] * n
                enc = enc.repeat_interleave(n, 0)
                mask = src["attention_mask"].repeat_interleave(n, 0)
                ids = torch.zeros(rows, 1, dtype=torch.long, device=dev)  # decoder start = <pad>
                done = torch.zeros(rows, dtype=torch.bool, device=dev)
                past, generated = None, []
                for _ in range(max_new):
                    o = self.model(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=ids,
                                   use_cache=True, **{cache_kw: past})
                    past, logits = getattr(o, cache_kw), o.logits[:, -1].float()
                    if streams is None:
                        nxt = logits.argmax(-1)
                    else:
                        u = _uniforms(streams, start, start + enc.shape[0] // n, n).to(dev)
                        nxt = inverse_cdf_sample(torch.softmax(logits / temperature, -1), u)
                    nxt = nxt.masked_fill(done, self.tokenizer.pad_token_id)
                    generated.append(nxt)
                    done |= nxt == self.tokenizer.eos_token_id
                    ids = nxt.unsqueeze(-1)
                    if bool(done.all()):
                        break
                texts = self.tokenizer.batch_decode(torch.stack(generated, 1).cpu(), skip_special_tokens=True)
                out += [texts[i:i + n] for i in range(0, rows, n)]
        finally:
            self.model.train(was_training)
        return out

    @torch.no_grad()
    def _decode_causal(self, documents: list[str], n: int, *, temperature: float, max_new: int, streams,
                       batch_size: int) -> list[list[str]]:
        """The causal sampler: each chunk's prompts (their last ``max_source_tokens`` tokens, left-padded, true
        positions) run once; the cache is repeated ``n`` times per prompt and every row draws its tokens
        from it (:func:`_next_tokens`, the seq2seq sampler's random numbers)."""
        dev, cache_kw, tok = self.device, cache_keyword(self.model), self.tokenizer
        keep = {"logits_to_keep": 1} if accepts(self.model, "logits_to_keep") else {}
        was_training = self.model.training
        self.model.eval()
        out: list[list[str]] = []
        try:
            for start in range(0, len(documents), batch_size):
                chunk = documents[start:start + batch_size]
                rows_ids = [p[-self.config.max_source_tokens:] for p in tok(chunk)["input_ids"]]
                width = max(len(r) for r in rows_ids)
                ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows_ids], device=dev)
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows_ids], device=dev)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                o = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **keep)
                past, logits = getattr(o, cache_kw), o.logits[:, -1].float().repeat_interleave(n, 0)
                past.batch_repeat_interleave(n)
                mask, pos = mask.repeat_interleave(n, 0), pos[:, -1:].repeat_interleave(n, 0)
                rows = len(chunk) * n
                done = torch.zeros(rows, dtype=torch.bool, device=dev)
                generated = []
                for step in range(max_new):
                    nxt = _next_tokens(logits, streams, start, len(chunk), n, temperature)
                    nxt = nxt.masked_fill(done, tok.pad_token_id)
                    generated.append(nxt)
                    done |= nxt == tok.eos_token_id
                    if bool(done.all()) or step + 1 == max_new:
                        break
                    mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=dev)], 1)
                    pos = pos + 1
                    o = self.model(input_ids=nxt.unsqueeze(-1), attention_mask=mask, position_ids=pos,
                                   use_cache=True, **{cache_kw: past})
                    past, logits = getattr(o, cache_kw), o.logits[:, -1].float()
                texts = tok.batch_decode(torch.stack(generated, 1).cpu(), skip_special_tokens=True)
                out += [texts[i:i + n] for i in range(0, rows, n)]
        finally:
            self.model.train(was_training)
        return out

    def sample(self, documents: Sequence[str], n: int, *, temperature: float = 1.0,
               max_new_tokens: int | None = None, generator=None,
               seed: int | None = None, batch_size: int = 64) -> list[list[str]]:
        """``n`` responses per document, by ancestral sampling (no top-k / top-p) at ``temperature``.

        Randomness comes only from ``generator``: one ``torch.Generator`` for all documents, or a sequence
        of them, one per document (each document's responses then depend only on its own generator and
        the model, not on the other documents of the call: common random numbers); or from a fresh one
        seeded with ``seed``; with neither, seed 0. Each token is drawn by inversion
        (:func:`inverse_cdf_sample`) from one float64 uniform of the generator, on the generator's device,
        so a run on a GPU consumes the same random numbers as on the CPU. At most ``max_new_tokens``
        tokens (default ``max_target_tokens``). Returns one list of ``n`` strings per document.
        """
        if generator is not None and seed is not None:
            raise ValueError("pass generator or seed, not both")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        return self._decode(documents, n, temperature=temperature, max_new_tokens=max_new_tokens,
                            generator=generator, batch_size=batch_size)

    def greedy(self, documents: Sequence[str], *, max_new_tokens: int | None = None,
               batch_size: int = 256) -> list[str]:
        """The greedy (arg-max) response to each document."""
        return [r[0] for r in self._decode(documents, 1, temperature=1.0, max_new_tokens=max_new_tokens,
                                           generator=None, batch_size=batch_size)]

    # --- persistence ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the model (``model.safetensors``, ``config.json``), tokenizer, ``policy_config.json`` and,
        last, ``checksums.json`` (the weights' sha256, verified by :meth:`load`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / "policy_config.json").write_text(json.dumps(asdict(self.config), indent=2))
        record_checksums(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Policy":
        """Load a policy written by :meth:`save` (local files only), in eval mode.

        The weights are checked against ``checksums.json`` first: a corrupt or truncated file raises
        :class:`tpo_core.plumbing.provenance.CorruptFileError` naming it."""
        from transformers import PreTrainedTokenizerFast, T5ForConditionalGeneration

        directory = Path(directory)
        if not (directory / "policy_config.json").is_file():
            raise FileNotFoundError(f"no saved policy in {directory} (policy_config.json missing)")
        verify_checksums(directory, rebuild=f"Delete {directory} to rebuild it (a cached pi_0 is trained again "
                                            "by tpo_core.study.pipeline.load_study).")
        config = PolicyConfig(**json.loads((directory / "policy_config.json").read_text()))
        causal = not json.loads((directory / "config.json").read_text()).get("is_encoder_decoder", False)
        with quiet_loading():
            if causal:
                from transformers import AutoModelForCausalLM, AutoTokenizer
                model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
                tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            else:
                model = T5ForConditionalGeneration.from_pretrained(directory, local_files_only=True)
                tok = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
        return cls(model.eval(), tok, config)

    @classmethod
    def from_pretrained(cls, model_path: str | Path, *, max_source_tokens: int = 1000,
                        max_target_tokens: int = 256, name: str = "pretrained", local_files_only: bool = True
                        ) -> "Policy":
        """Wrap a pretrained seq2seq model (e.g. the paper's ``google-t5/t5-small``) or causal LM (e.g. SmolLM2,
        :func:`tpo_core.world.llm_assets.ensure_llm`) and its tokenizer.

        ``model_path`` is a local folder, or a Hub id with ``local_files_only=False`` (GPU users of the
        ``paper`` preset). A seq2seq decoder must start from the pad token, as T5's does.
        """
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        with quiet_loading():
            tok = AutoTokenizer.from_pretrained(str(model_path), local_files_only=local_files_only)
            causal = not AutoConfig.from_pretrained(str(model_path), local_files_only=local_files_only
                                                    ).is_encoder_decoder
            auto = AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM
            model = auto.from_pretrained(str(model_path), local_files_only=local_files_only)
        if not causal and model.config.decoder_start_token_id != tok.pad_token_id:
            raise ValueError(f"{model_path}: decoder_start_token_id {model.config.decoder_start_token_id} is not "
                             f"the pad token {tok.pad_token_id}; only T5-style decoders are supported")
        config = PolicyConfig(name=name, vocab_size=max(len(tok), 4), max_source_tokens=max_source_tokens,
                              max_target_tokens=max_target_tokens, minilm_init=False)
        return cls(model.eval(), tok, config)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"Policy({self.config.name!r}, {n / 1e6:.2f}M parameters, vocab {len(self.tokenizer)})"
