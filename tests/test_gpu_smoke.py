"""tpo_core.commands.gpu_smoke at toy sizes on CPU (``--tiny``): the same code the GPU runs, its rows and checks."""

import pandas as pd
import pytest


def test_gpu_smoke_tiny_on_cpu(tmp_path, capsys):
    from tpo_core.commands import gpu_smoke
    from tpo_core.world.llm_assets import AssetMissingError, ensure_llm

    try:
        ensure_llm("smollm2")
    except AssetMissingError as err:
        pytest.skip(f"the SmolLM2 package is not installed: {err}")
    out = gpu_smoke.main(["--tiny", "--rounds", "1", "--results-root", str(tmp_path / "r"),
                          "--out", str(tmp_path / "smoke.csv")])
    printed = capsys.readouterr().out
    assert "FAILED" not in printed and printed.count("[ok]") == 4
    assert set(out.part) >= {"sampler", "sampler tokens", "iteration:tpo", "trainer"}
    trainer = out[out.part == "trainer"].iloc[0]
    assert 0 < trainer.mfu < 1.5 and trainer.model_flops > 0  # a utilisation, of the measured matmul peak
    assert (out.items_per_s > 0).all()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "smoke.csv")[["part"]], out[["part"]])


def test_gpu_smoke_refuses_a_machine_without_cuda():
    import torch

    from tpo_core.commands import gpu_smoke

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        gpu_smoke.main([])
