"""Nothing stale, nothing corrupt: every cached result is reused only when the identity of what made it
matches (tpo_core.plumbing.provenance), weights are verified before loading, bad values fail before compute."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jupytext
import numpy as np
import pandas as pd
import pytest
import torch

from tpo_core.plumbing import provenance
from tpo_core.commands import reproduce
from tpo_core.study import pipeline as S
from tpo_core.plumbing.provenance import CorruptFileError, StaleResultError


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return S.load_study("smoke", results_root=tmp_path_factory.mktemp("results"))


def _flip(path, offset=-64, n=16):
    """Flip ``n`` bytes of ``path`` in place (same size: only a checksum can tell)."""
    data = bytearray(path.read_bytes())
    for i in range(n):
        data[offset + i] ^= 0xFF
    path.write_bytes(bytes(data))


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_changed_setting_writes_beside_and_going_back_reuses(smoke, monkeypatch):
    """New preset fields never reuse old checkpoints or old evaluation rows: they train and judge into folders
    of their own key, beside the old ones, which stay untouched; going back to the old settings trains and
    judges nothing."""
    from tpo_core.study import table1
    from tpo_core.tpo import trainer

    seed = smoke.preset.seeds[0]
    S.run(smoke, "no-transfer", seed)
    first = S.evaluate_run(smoke, "no-transfer", [seed])
    d1 = S.run_dir(smoke, "no-transfer", seed)
    before = {**_snapshot(d1), **_snapshot(S.eval_path(smoke, "no-transfer", seed).parent)}
    w1 = _weights(d1 / "iter_1")
    changed = dataclasses.replace(smoke, preset=dataclasses.replace(smoke.preset, learning_rate=0.5, beta=5.0))
    # evaluating checkpoints never trained with these settings is refused, naming how the existing ones differ
    with pytest.raises(StaleResultError, match=r"never trained.*beta: 0\.1 -> 5\.0.*learning_rate: 0\.001 -> 0\.5"):
        S.evaluate_run(changed, "no-transfer", [seed])
    S.run(changed, "no-transfer", seed)
    d2 = S.run_dir(changed, "no-transfer", seed)
    assert d2 != d1 and d2.parent.parent == d1.parent.parent  # runs/no-transfer/<key>/seed_<s>, side by side
    recorded = json.loads((d2 / "identity.json").read_text())
    assert recorded["preset"]["learning_rate"] == 0.5 and recorded["preset"]["beta"] == 5.0
    w2 = _weights(d2 / "iter_1")
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # really retrained
    second = S.evaluate_run(changed, "no-transfer", [seed])
    assert set(second.checkpoint).isdisjoint(first.checkpoint)  # every row judged the new weights
    assert not np.array_equal(first.gold, second.gold)
    assert {**_snapshot(d1), **_snapshot(S.eval_path(smoke, "no-transfer", seed).parent)} == before  # untouched
    # back to the old settings: nothing is trained or judged again
    def refuse(*a, **k):
        raise AssertionError("recomputed a finished result")
    monkeypatch.setattr(trainer.PreferenceTrainer, "train_iteration", refuse)
    monkeypatch.setattr(table1, "_evaluate", refuse)
    S.run(smoke, "no-transfer", seed)
    pd.testing.assert_frame_equal(S.evaluate_run(smoke, "no-transfer", [seed]), first)
    assert {**_snapshot(d1), **_snapshot(S.eval_path(smoke, "no-transfer", seed).parent)} == before


def test_a_changed_library_recomputes(smoke, monkeypatch, capsys):
    seed = smoke.preset.seeds[0]
    S.run(smoke, "no-transfer", seed)
    before = S.run_identity(smoke, "no-transfer", seed)
    from tpo_core.study import runs

    monkeypatch.setattr(runs, "code_identity", lambda *a, **k: "edited")
    assert S.run_identity(smoke, "no-transfer", seed)["code"] == "edited" != before["code"]
    with pytest.raises(StaleResultError, match="code"):
        S.evaluate_run(smoke, "no-transfer", [seed])
    S.run(smoke, "no-transfer", seed)  # trains into the folder of the edited code's key
    assert json.loads((S.run_dir(smoke, "no-transfer", seed) / "identity.json").read_text())["code"] == "edited"


def test_evaluation_rows_are_keyed_by_the_checkpoint_they_judged(smoke):
    """A retrained checkpoint (other weights, same iteration number) is evaluated again."""
    seed = smoke.preset.seeds[0]
    S.run(smoke, "no-transfer", seed)
    first = S.evaluate_run(smoke, "no-transfer", [seed])
    path = S.eval_path(smoke, "no-transfer", seed)
    fake = first.assign(gold=0.123)  # what a stale cache would serve
    S.write_csv(fake, path)
    assert (S.evaluate_run(smoke, "no-transfer", [seed]).gold == 0.123).all()  # same checkpoint: reused
    S.write_csv(fake.assign(checkpoint="0" * 16), path)  # rows of other weights
    pd.testing.assert_frame_equal(S.evaluate_run(smoke, "no-transfer", [seed]), first)
    S.write_csv(fake.assign(eval_key="0" * 16), path)  # rows of other evaluation settings
    pd.testing.assert_frame_equal(S.evaluate_run(smoke, "no-transfer", [seed]), first)


def test_corrupt_or_truncated_checkpoints_are_clear_errors(smoke, tmp_path):
    """Flipped bytes or a truncated file in a run checkpoint raise, naming the file."""
    seed = smoke.preset.seeds[1]
    S.run(smoke, "no-transfer", seed)
    run_dir = S.run_dir(smoke, "no-transfer", seed)
    backup = tmp_path / "backup"
    shutil.copytree(run_dir, backup)
    weights = run_dir / "iter_1" / "model.safetensors"
    _flip(weights)
    with pytest.raises(CorruptFileError, match=r"(?s)corrupt or truncated.*iter_1/model.safetensors: sha256 [0-9a-f]{64}, expected"):
        S.run(smoke, "no-transfer", seed)
    S.eval_path(smoke, "no-transfer", seed).unlink(missing_ok=True)
    with pytest.raises(CorruptFileError, match="Delete"):
        S.evaluate_run(smoke, "no-transfer", [seed])
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated: not a raw SafetensorError
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        S.run(smoke, "no-transfer", seed)
    (run_dir / "iter_1" / provenance.CHECKSUMS).unlink()
    with pytest.raises(CorruptFileError, match="no readable checksums.json"):
        S.run(smoke, "no-transfer", seed)
    shutil.rmtree(run_dir)
    shutil.copytree(backup, run_dir)
    S.run(smoke, "no-transfer", seed)  # intact again: resumes


def test_corrupt_pi0_cache_is_a_clear_error(smoke, tmp_path):
    from tpo_core.world.data import load_debian
    from tpo_core.world.policy_config import SMOKE
    from tpo_core.world.sft import cache_folder, data_sha256, recipe_identity, train_sft

    sft = load_debian("sft").iloc[:200]
    train_sft(SMOKE, sft, cache_dir=tmp_path, progress=False)
    folder = cache_folder(tmp_path, SMOKE, data_sha256(sft))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["code"] == recipe_identity(SMOKE)["code"] == provenance.code_identity("world.sft_recipe")
    _flip(folder / "model.safetensors")
    with pytest.raises(CorruptFileError, match=f"Delete {folder}"):
        train_sft(SMOKE, sft, cache_dir=tmp_path, progress=False)
    shutil.rmtree(folder)
    train_sft(SMOKE, sft, cache_dir=tmp_path, progress=False)  # rebuilt


def test_non_finite_training_leaves_no_checkpoint(smoke, tmp_path):
    """A NaN loss stops the iteration before anything is written."""
    from tpo_core.study.checkpoints import train_or_load
    from tpo_core.tpo.trainer import PreferenceConfig, PreferenceTrainer

    pol = smoke.new_pi0()
    with torch.no_grad():
        next(pol.model.parameters()).fill_(float("nan"))
    trainer = PreferenceTrainer(pol.model, pol.encode, PreferenceConfig(batch_size=2, grad_accum=1, epochs=1,
                                                                       warmup_steps=1, progress=False))
    pairs = [{"prompt": d, "chosen": "a tool", "rejected": "b"} for d in smoke.online.document[:4]]
    with pytest.raises(FloatingPointError, match="no checkpoint is written"):
        train_or_load(trainer, pairs, tmp_path, 1)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="beta must be a finite number"):
        PreferenceConfig(beta=float("nan"))


def test_result_files_read_back_with_plain_pandas(smoke):
    """The null arm is written 'online', which pandas.read_csv keeps as a string."""
    seed = smoke.preset.seeds[0]
    S.run_all(smoke, ["no-transfer"], [seed], progress=False)
    for path in [smoke.root / "arms.csv", S.run_dir(smoke, "no-transfer", seed) / "records_iter_1.csv"]:
        df = pd.read_csv(path)
        assert df.arm.notna().all() and set(df.arm) == {"online"}, path


def test_cache_root_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch):
    from tpo_core.plumbing.common import cache_root

    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("TPO_CORE_CACHE", str(tmp_path / "f"))
    with pytest.raises(NotADirectoryError, match="TPO_CORE_CACHE"):
        cache_root()


def test_code_identity_follows_imports_and_edits(tmp_path, monkeypatch):
    pkg = tmp_path / "tpo_core"
    shutil.copytree(provenance.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE", pkg)
    provenance._closure.cache_clear()
    provenance._code_text_cached.cache_clear()
    try:
        study, ev = provenance.code_identity("study.pipeline"), provenance.code_identity("study.evaluation")
        assert provenance.code_identity(source="from tpo_core.study import pipeline\n") == study
        trainer = pkg / "tpo" / "trainer.py"
        text = trainer.read_text()
        # documentation, comments and layout are not code: the identity stays
        trainer.write_text(text.replace('"""', '"""Edited docs. ', 1) + "\n# a comment\n\n\n")
        assert provenance.code_identity("study.pipeline") == study
        # code is: the pipeline imports the trainer (inside a function), evaluation does not
        trainer.write_text(text + "\nEXTRA_CONSTANT = 1\n")
        assert provenance.code_identity("study.pipeline") != study
        assert provenance.code_identity("study.evaluation") == ev
    finally:
        provenance._closure.cache_clear()
        provenance._code_text_cached.cache_clear()


def test_display_and_progress_edits_leave_every_step_identity(tmp_path, monkeypatch):
    """A fix to a progress bar, a formatter or Table 1's statistics retrains and re-judges nothing: the
    identities of a run, a judgment, π_0's recipe and the source measurement stay; an edit to the sampler
    changes the run's and the judgment's."""
    from tpo_core.study.judging import JUDGING_CODE

    pkg = tmp_path / "tpo_core"
    shutil.copytree(provenance.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE", pkg)
    steps = {"run": ("study.runs",), "judgment": JUDGING_CODE, "pi0": ("world.sft_recipe",),
             "sources": ("study.source_measurement",)}
    ident = lambda: {k: provenance.code_identity(*m) for k, m in steps.items()}  # noqa: E731
    provenance._closure.cache_clear()
    provenance._code_text_cached.cache_clear()
    try:
        before = ident()
        for module in ("plumbing/progress", "study/report", "study/table1", "study/power", "world/wheel_parts"):
            path = pkg / f"{module}.py"
            path.write_text(path.read_text() + "\nEDITED = print\n")
        provenance._closure.cache_clear()
        assert ident() == before
        assert all(m not in provenance.code_modules(*steps["run"]) for m in ("plumbing.progress", "study.report", "study.table1"))
        policy = pkg / "world" / "policy.py"
        policy.write_text(policy.read_text() + "\nEDITED = 1\n")
        after = ident()
        assert after["run"] != before["run"] and after["judgment"] != before["judgment"]
        assert after["pi0"] == before["pi0"]  # π_0's recipe does not sample
    finally:
        provenance._closure.cache_clear()
        provenance._code_text_cached.cache_clear()


def test_type_only_imports_are_not_code_the_step_runs():
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tpo_core.study.loading import Study\n" \
          "else:\n    from tpo_core.plumbing import streams\nimport typing\nif typing.TYPE_CHECKING:\n    import tpo_core.study.runs\n"
    assert provenance.tpo_core_imports(src) == {"plumbing", "plumbing.streams"}
    assert "study.loading" not in provenance.code_modules("study.judging")


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_code_identity_is_the_same_under_other_python_versions(version):
    """Every module's code text, computed by provenance.py under another Python minor version (where one is
    installed: pyenv's shims), equals this interpreter's: a Python upgrade retrains nothing."""
    import json
    import subprocess

    exe = shutil.which(f"python{version}")
    if exe is None:
        pytest.skip(f"python{version} is not installed")
    script = ("import importlib.util, json, pathlib, sys\n"
              "spec = importlib.util.spec_from_file_location('prov', sys.argv[1])\n"
              "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
              "root = pathlib.Path(sys.argv[1]).parents[1]\n"
              "print(json.dumps({str(p.relative_to(root)): m.sha256_json(m.code_text(p.read_text(encoding='utf-8')))\n"
              "                  for p in sorted(root.rglob('*.py'))}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYENV_VERSION"}
    versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split() \
        if shutil.which("pyenv") else []
    match = [v for v in versions if v.startswith(version + ".")]
    if shutil.which("pyenv") and not match:
        pytest.skip(f"pyenv has no Python {version}")
    if match:
        env["PYENV_VERSION"] = match[-1]
    out = subprocess.run([exe, "-c", script, str(provenance.PACKAGE / "plumbing" / "provenance.py")], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        pytest.skip(f"python{version} did not run: {out.stderr[-300:]}")
    theirs = json.loads(out.stdout)
    ours = {str(p.relative_to(provenance.PACKAGE)): provenance.sha256_json(provenance.code_text(p.read_text(encoding="utf-8")))
            for p in sorted(provenance.PACKAGE.rglob("*.py"))}
    assert theirs == ours


def test_runs_identity_does_not_hold_the_measurement_code():
    """A run reads only the names of the exploited sources (in its identity), not how they were measured:
    editing the measurement (speed columns, plots) must not retrain every run."""
    assert "study.source_measurement" not in provenance._closure("study.runs")
    assert "study.source_measurement" in provenance._closure("study.pipeline")


def test_changed_fields_names_nested_differences():
    a = {"preset": {"beta": 0.1, "seeds": (1, 2)}, "code": "x"}
    b = {"preset": {"beta": 5.0, "seeds": [1, 2]}, "code": "x", "new": 1}
    assert provenance.changed_fields(a, b) == ["new", "preset.beta"]
    assert provenance.describe_changes(a, b) == 'new: "<absent>" -> 1, preset.beta: 0.1 -> 5.0'
    assert provenance.changed_fields(a, a) == []


def test_reproduce_rejects_an_undeclared_parameter(tmp_path):
    """A misspelled parameter is an error before anything runs, not a silent default."""
    spec = reproduce.NotebookSpec("01_source_rms", quick={"preset": "smoke", "n_promts": 4})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['n_promts'\].*n_prompts"):
        reproduce.run_notebook(spec, quick=True, executed_dir=tmp_path / "ex", results_dir=tmp_path / "res")
    assert not (tmp_path / "ex").exists() and not (tmp_path / "res").exists()
    nb = jupytext.read(reproduce.ROOT / "notebooks" / "01_source_rms.md")
    assert {"preset", "n_prompts", "seed", "results_dir"} <= reproduce.declared_parameters(nb)


def test_reproduce_settings_parse_as_literals():
    assert reproduce.parse_settings(["seeds=[1, 2]", "preset=smoke", "n_boot=200", "x='a=b'", "y=None"]) == {
        "seeds": [1, 2], "preset": "smoke", "n_boot": 200, "x": "a=b", "y": None}
    for bad in (["seeds"], ["=3"], ["two words=1"]):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            reproduce.parse_settings(bad)


def test_key_value_arguments_are_parsed_in_one_place(capsys):
    """``--set`` and ``--model-path`` of reproduce, prune and distributed go through tpo_core.commands.cli."""
    from tpo_core.commands import cli, distributed, prune

    assert reproduce.parse_settings is cli.parse_settings
    assert cli.key_values(["org/model=/x=y", "c= d"]) == {"org/model": "/x=y", "c": " d"}
    for bad in (["nothing"], ["=folder"]):
        with pytest.raises(ValueError, match="HUB_ID=FOLDER"):
            cli.key_values(bad)
    for main in (distributed.main, prune.main):
        with pytest.raises(SystemExit):
            main(["--model-path", "no-folder"])
        assert "HUB_ID=FOLDER" in capsys.readouterr().err


def test_reproduce_settings_reach_exactly_the_notebooks_that_declare_them(tmp_path, monkeypatch):
    """``--set`` passes a parameter to every notebook declaring it, changes that notebook's key, and is refused
    when no notebook run declares it."""
    import papermill

    seen = {}

    def fake_execute(src, out, parameters, **kw):  # records the parameters instead of running the kernel
        seen[Path(src).stem] = dict(parameters)
        shutil.copy(src, out)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    kw = dict(quick=True, executed_dir=tmp_path / "ex", results_dir=tmp_path / "res")
    settings = {"ablation_seeds": 2, "n_boot": 300}
    for name in ("04_table1", "09_ablations"):
        reproduce.run_notebook(reproduce._spec(name), settings=settings, **kw)
    assert "ablation_seeds" not in seen["04_table1"] and seen["04_table1"]["n_boot"] == 300
    assert seen["09_ablations"]["ablation_seeds"] == 2 and seen["09_ablations"]["n_boot"] == 300
    plain = reproduce.run_notebook(reproduce._spec("09_ablations"), **kw)
    assert seen["09_ablations"]["n_boot"] == 200 and not plain.get("skipped")  # another key: rerun
    with pytest.raises(SystemExit):
        reproduce.main(["--only", "00_theory", "--no-book", "--set", "ablation_seeds=5"])
    with pytest.raises(SystemExit):
        reproduce.main(["--only", "04_table1", "--no-book", "--set", "results_dir=x"])


def test_a_failed_notebook_leaves_nothing_in_the_book(tmp_path):
    """No hidden .running.ipynb left behind; the failed copy is kept under results/failed."""
    import papermill

    spec = reproduce.NotebookSpec("06_differences", quick={"preset": "no-such-preset"})
    with pytest.raises(papermill.PapermillExecutionError, match="unknown preset"):
        reproduce.run_notebook(spec, quick=True, executed_dir=tmp_path / "ex", results_dir=tmp_path / "res")
    assert list((tmp_path / "ex").iterdir()) == []
    assert (tmp_path / "res" / "failed" / "06_differences.ipynb").is_file()
    assert not (tmp_path / "res" / "manifests").exists()


@pytest.mark.parametrize("call, match", [
    (lambda st: S.run_all(st, ["no-transfer"], ["a"], progress=False), "seeds must be a non-empty list of integers"),
    (lambda st: S.run_all(st, ["no-transfer"], [1, 1], progress=False), "distinct"),
    (lambda st: S.evaluate_run(st, "tpo", [2.5]), "integers"),
    (lambda st: S.measure_sources(st, n_prompts="4"), "n_prompts must be an integer"),
    (lambda st: S.measure_sources(st, n_prompts=10**9), "n_prompts must be an integer"),
    (lambda st: S.measure_sources(st, n_prompts=4, seed=None), "seed must be an integer"),
])
def test_notebook_parameters_are_checked_before_compute(smoke, call, match):
    with pytest.raises(ValueError, match=match):
        call(smoke)


def test_a_notebook_reruns_when_the_library_or_an_upstream_result_changes(tmp_path, monkeypatch):
    """The notebook key covers the library code the notebook imports and the run keys of the
    notebooks whose results it reads, not only its own source and parameters."""
    spec = next(s for s in reproduce.NOTEBOOKS if s.name == "06_differences")
    kw = dict(quick=True, executed_dir=tmp_path / "ex", results_dir=tmp_path / "res")
    first = reproduce.run_notebook(spec, **kw)
    assert reproduce.run_notebook(spec, **kw).get("skipped") is True
    (tmp_path / "res" / "manifests" / "04_table1.json").write_text(json.dumps({"key": "new table 1"}))
    again = reproduce.run_notebook(spec, **kw)
    assert not again.get("skipped") and again["key"] != first["key"]
    real = provenance.code_identity
    monkeypatch.setattr(provenance, "code_identity", lambda *a, **k: real(*a, **k) + "-edited")
    third = reproduce.run_notebook(spec, **kw)
    assert not third.get("skipped") and third["library_code"].endswith("-edited")


def test_publish_dir_makes_a_folder_appear_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out" / "model"
    with provenance.publish_dir(target) as work:
        assert work.parent == target.parent and not target.exists()
        (work / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["model"]

    with pytest.raises(KeyboardInterrupt):  # an interrupted build: the old folder stays, nothing is left over
        with provenance.publish_dir(target) as work:
            (work / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["model"]

    with provenance.publish_dir(target, replace=False) as work:  # first writer wins: ours is discarded
        (work / "a.txt").write_text("two")
    assert (target / "a.txt").read_text() == "one"
    with provenance.publish_dir(target) as work:  # replace=True: the new folder replaces the old, whole
        (work / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]

    (tmp_path / "out" / ".model.tmp-killed").mkdir()  # left by a SIGKILL
    (tmp_path / "out" / ".other.tmp-x").mkdir()  # another target's build: not touched
    with provenance.publish_dir(target, clear_leftovers=True):
        pass
    assert sorted(p.name for p in target.parent.iterdir()) == [".other.tmp-x", "model"]
    assert list(target.iterdir()) == []


def test_default_run_leaves_the_extended_study_out_and_its_chapters_out_of_the_book(tmp_path, monkeypatch):
    """`reproduce` runs the extended chapters (pilot, ablations, IPO) only with --extended, and a book shows an
    extended chapter only when the command that built it ran that chapter."""
    import yaml

    ran = []
    monkeypatch.setattr(reproduce, "run_notebook", lambda spec, **kw: ran.append(spec.name) or {"seconds": 0.0})
    reproduce.main(["--no-book"])
    extended = {s.name for s in reproduce.NOTEBOOKS if s.extended}
    assert extended == {"08_pilot", "09_ablations", "10_ipo", "A1_bench"}
    assert ran == [s.name for s in reproduce.NOTEBOOKS if not s.extended]
    ran.clear()
    reproduce.main(["--no-book", "--extended"])
    assert ran == [s.name for s in reproduce.NOTEBOOKS]

    book = tmp_path / "book"
    book.mkdir()
    shutil.copy(reproduce.ROOT / "book" / "_toc.yml", book / "_toc.yml")
    files = lambda chapters: [c["file"] for c in yaml.safe_load(  # noqa: E731
        reproduce.book_toc(book, chapters).read_text())["chapters"]]
    full = [c["file"] for c in yaml.safe_load((book / "_toc.yml").read_text())["chapters"]]
    assert files(None) == full  # the tests' quick book: every chapter
    default = files({s.name for s in reproduce.NOTEBOOKS if not s.extended})
    assert default == [f for f in full if f.removeprefix("executed/") not in extended]
    assert "executed/09_ablations" in files({"09_ablations"}) and "executed/08_pilot" not in files({"09_ablations"})
    assert (book / "_toc.yml").read_text() == (reproduce.ROOT / "book" / "_toc.yml").read_text()  # untouched


def test_prune_lists_then_removes_only_what_no_current_setting_uses(smoke):
    from tpo_core.commands import prune

    seed = smoke.preset.seeds[0]
    S.run(smoke, "no-transfer", seed)
    S.evaluate_run(smoke, "no-transfer", [seed])
    other = dataclasses.replace(smoke, preset=dataclasses.replace(smoke.preset, learning_rate=0.02))
    S.run(other, "no-transfer", seed)
    S.evaluate_run(other, "no-transfer", [seed])
    legacy = smoke.root / "runs" / "no-transfer" / "seed_77"  # the layout before keys
    legacy.mkdir(parents=True)
    (legacy / "identity.json").write_text("{}")
    mine, theirs = S.run_dir(smoke, "no-transfer", seed).parent, S.run_dir(other, "no-transfer", seed).parent
    lines = []
    listed = {e.path: e.used for e in prune.entries(smoke)}
    assert listed[mine] and not listed[theirs] and not listed[legacy]
    assert listed[S.eval_path(smoke, "no-transfer", seed).parent]
    assert not listed[S.eval_path(other, "no-transfer", seed).parent]
    assert listed[S.first_online_dir(smoke)]
    before = _snapshot(mine)
    unused = prune.prune(smoke, echo=lines.append)  # a listing removes nothing
    assert theirs.is_dir() and legacy.is_dir() and any("--delete" in x for x in lines)
    assert {e.path for e in unused} >= {theirs, legacy, S.eval_path(other, "no-transfer", seed).parent}
    prune.prune(smoke, delete=True, echo=lines.append)
    assert not theirs.exists() and not legacy.exists() and _snapshot(mine) == before
    assert all(e.used for e in prune.entries(smoke))
    # seen from the other setting, the first one's folders are the unused ones
    assert not {e.path: e.used for e in prune.entries(other)}[mine]


def test_the_architecture_page_lists_the_code_each_step_identity_covers():
    import re

    text = (provenance.PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = re.findall(r"<!-- modules:([a-z_.,]+) -->([^|\n]*)", text)
    assert {r[0] for r in rows} == {"study.runs", "study.judging,world.policy,world.oracle", "world.sft_recipe",
                                    "study.source_measurement"}
    for modules, listed in rows:
        assert re.findall(r"`([a-z_0-9.]+)`", listed) == provenance.code_modules(*modules.split(",")), modules
