"""The command lines: ``python -m tpo_core.commands.reproduce`` (what ``nox -s reproduce`` runs), ``prune``,
``browser_check``, the benchmarks ``bench`` and ``bench_loop``, and ``accelerate launch -m
tpo_core.commands.distributed``."""
