"""tpo_core.plumbing.progress: the open bars are mirrored to $TPO_CORE_PROGRESS, nested, counted after the body."""

import time

from tpo_core.plumbing import progress as G


def test_bars_are_reported_nested_and_removed_when_closed(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    monkeypatch.setenv(G.ENV, str(path))
    seen = []
    for run in G.track(["a", "b"], "runs", disable=True):
        with G.Progress(4, f"prompts of {run}", disable=True) as bar:
            bar.update(3)
            seen.append([(s["desc"], s["n"], s["total"]) for s in G.read_state(path)])
        seen.append([(s["desc"], s["n"]) for s in G.read_state(path)])
    assert seen == [[("runs", 0, 2), ("prompts of a", 3, 4)], [("runs", 0)],
                    [("runs", 1, 2), ("prompts of b", 3, 4)], [("runs", 1)]]
    assert G.read_state(path) == []  # all closed
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary files left


def test_no_file_without_the_variable_and_unreadable_state_is_empty(tmp_path, monkeypatch):
    monkeypatch.delenv(G.ENV, raising=False)
    assert list(G.track(range(3), "x", disable=True)) == [0, 1, 2]
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "bad.json").write_text("{not json")
    assert G.read_state(tmp_path / "bad.json") == [] and G.read_state(tmp_path / "missing.json") == []


def test_watch_shows_the_reported_bars(tmp_path, monkeypatch, capsys):
    path = tmp_path / "p.json"
    monkeypatch.setenv(G.ENV, str(path))
    stop = G.watch(path, interval=0.05)
    with G.Progress(10, "evaluate tpo", disable=True, unit="seed") as bar:
        bar.update(4)
        time.sleep(0.4)
    stop()
    err = capsys.readouterr().err
    assert "evaluate tpo" in err and "4/10" in err and "seed/s" in err
