"""The offline GPU preset (``gpu``): a causal π_0 (SmolLM2-135M after a short SFT, tpo_core.world.causal_sft), run on
CPU with tiny settings through one TPO iteration and its evaluation; and the causal SFT's cache."""

import pytest
import torch

from tpo_core.world.presets import get_preset

from tpo_core.commands.gpu_smoke import TINY  # the same toy sizes the GPU smoke check runs with --tiny


def _smollm2_or_skip():
    from tpo_core.world.llm_assets import AssetMissingError, ensure_llm

    try:
        return ensure_llm("smollm2")
    except AssetMissingError as err:
        pytest.skip(f"the SmolLM2 package is not installed: {err}")


def test_gpu_preset_is_offline_and_causal():
    from tpo_core.world.causal_sft import CAUSAL_SFT

    p = get_preset("gpu")
    assert p.offline and p.policy.startswith("sft-llm:") and p.policy.split(":", 1)[1] in CAUSAL_SFT
    assert p.prompts(["doc"]) == [p.prompt_prefix + "doc" + p.prompt_suffix] and p.prompt_suffix
    assert all(s.get("kind") in ("rougeLsum", "bertscore", "llm-logprob") for s in p.sources.values())
    with pytest.raises(ValueError, match="prompt_suffix"):
        get_preset("gpu", prompt_suffix=3)


def test_causal_sft_learns_and_is_cached(tmp_path):
    """The recipe lowers the response loss, and a second call loads the cached folder (no training)."""
    from dataclasses import replace

    from tpo_core.world import causal_sft as C
    from tpo_core.world.data import load_debian

    base = _smollm2_or_skip()
    df = load_debian("sft").iloc[:4]
    p = get_preset("gpu")
    cfg = replace(C.CAUSAL_SFT["smollm2-smoke"], steps=4, batch_size=2, learning_rate=2e-4)
    prompts, responses = p.prompts(df.document), list(df.summary)
    pol = C.train_causal_sft(cfg, base, prompts, responses, cache_dir=tmp_path)
    folder = C.causal_cache_folder(tmp_path, cfg, base, prompts, responses)
    import json
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["final_loss"] < manifest["first_loss"]
    assert not pol.is_encoder_decoder
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    again = C.train_causal_sft(cfg, base, prompts, responses, cache_dir=tmp_path)
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    assert again.greedy(prompts[:2], max_new_tokens=4) == pol.greedy(prompts[:2], max_new_tokens=4)
    other = C.causal_cache_folder(tmp_path, cfg, base, prompts, responses[:3] + ["x"])
    assert other != folder  # other pairs, other key


def test_gpu_preset_smoke_iteration_on_cpu(tmp_path):
    """One TPO iteration of the ``gpu`` preset at tiny settings, on CPU: the causal π_0 samples, the sources and
    the human label, DPO trains the 135M model, the checkpoint is judged on the test prompts."""
    from tpo_core.study import pipeline as S

    _smollm2_or_skip()
    torch.manual_seed(0)
    study = S.load_study(get_preset("gpu", **TINY), results_root=tmp_path)
    assert not study.new_pi0().is_encoder_decoder
    arms = S.run_all(study, ["tpo"], [0], progress=False)
    assert arms.pulls.sum() == study.preset.prompts_per_iteration
    assert set(arms.arm) <= {"rougeLsum", "bertscore", "online"}
    evals = S.evaluate_run(study, "tpo", [0])
    assert len(evals) == study.preset.n_test_prompts and evals.gold.between(-1, 1).all()
