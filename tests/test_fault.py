"""Fault test (``nox -s fault``; deselected from the default suite, it takes two quick studies' time).

The quick study, extended chapters included, is run once uninterrupted. Then, in a fresh results tree, it is killed with SIGKILL inside
each notebook in turn -- the reproduce process, papermill and the notebook's kernel at once, mid-notebook --
and rerun; each rerun resumes and is killed inside the next notebook. After the last kill it runs to the
end. Every results table must then equal the uninterrupted run's byte for byte (timings aside).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tpo_core.commands import reproduce

pytestmark = pytest.mark.fault

#: Columns and files that hold wall-clock times, the only things allowed to differ.
TIMED_FILES = {"bench.csv", "bench.log", "bench_loop.csv", "bench_loop.log"}
TIMED_COLUMNS = {"seconds", "score_seconds", "candidates_per_s", "seconds_per_seed", "minutes", "minutes_to_detect"}


def _start(results: Path, executed: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tpo_core.commands.reproduce", "--quick", "--extended", "--no-book", "--no-progress",
           "--results-dir", str(results), "--executed-dir", str(executed)]
    return subprocess.Popen(cmd, cwd=reproduce.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process and every descendant (the kernel runs in a session of its own)."""
    import psutil

    try:
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = [proc.pid]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    psutil.wait_procs([p for p in (psutil.Process(q) for q in family[1:] if psutil.pid_exists(q))], timeout=10)


def _tables(results: Path) -> dict[str, bytes]:
    """Every results table (CSV and JSON outside manifests and failed/), timing columns removed."""
    import pandas as pd

    out = {}
    for p in sorted(results.rglob("*")):
        rel = p.relative_to(results)
        if not p.is_file() or rel.parts[0] in ("manifests", "failed") or p.name in TIMED_FILES:
            continue
        if p.suffix == ".csv":
            df = pd.read_csv(p)
            if TIMED_COLUMNS & set(df.columns):
                out[str(rel)] = df.drop(columns=list(TIMED_COLUMNS & set(df.columns))).to_csv(index=False).encode()
                continue
            out[str(rel)] = p.read_bytes()
        elif p.suffix == ".json" and p.name != "preference_config.json":
            data = json.loads(p.read_text())
            if isinstance(data, dict) and TIMED_COLUMNS & set(data):  # timing_iter_k.json: the seconds an iteration took
                data = {k: v for k, v in data.items() if k not in TIMED_COLUMNS}
                out[str(rel)] = json.dumps(data, sort_keys=True).encode()
                continue
            out[str(rel)] = p.read_bytes()
    return out


def test_sigkill_inside_every_notebook_then_resume_gives_identical_tables(tmp_path):
    ref_res, ref_ex = tmp_path / "ref" / "results", tmp_path / "ref" / "executed"
    assert _start(ref_res, ref_ex).wait(timeout=3600) == 0
    seconds = {s.name: json.loads((ref_res / "manifests" / f"{s.name}.json").read_text())["seconds"]
               for s in reproduce.NOTEBOOKS}

    res, ex = tmp_path / "killed" / "results", tmp_path / "killed" / "executed"
    killed_in = []
    for spec in reproduce.NOTEBOOKS:
        proc = _start(res, ex)
        running = ex / f".{spec.name}.running.ipynb"
        deadline = time.time() + 3600
        while not running.exists():  # the earlier notebooks resume and finish first
            assert proc.poll() is None, f"the study exited ({proc.returncode}) before reaching {spec.name}"
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.5 * seconds[spec.name])  # mid-notebook, by the uninterrupted run's timing
        inside = running.exists() and not (ex / f"{spec.name}.ipynb").exists()
        _kill_tree(proc)
        assert inside, f"{spec.name} finished before the kill landed"
        assert not (ex / f"{spec.name}.ipynb").exists()
        killed_in.append(spec.name)
    assert _start(res, ex).wait(timeout=3600) == 0
    assert killed_in == [s.name for s in reproduce.NOTEBOOKS]

    ref, got = _tables(ref_res), _tables(res)
    assert sorted(got) == sorted(ref)
    assert len(ref) > 20 and any(k.endswith("table1.csv") for k in ref)
    differ = [k for k in ref if ref[k] != got[k]]
    assert not differ, "\n".join(differ)
