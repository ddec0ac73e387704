"""Data-parallel TPO through HF ``accelerate``: ``accelerate launch -m tpo_core.commands.distributed``.

The authors ran the paper's XSum study on 4 GPUs with accelerate: each worker generates and annotates
its share of an iteration's prompts, and the bandit's statistics are pooled across workers every 50
prompts per worker (their batched UCB, paper §5 Alg. 3 with ``update_every = 4 × 50 = 200``); DPO then
trains on the gathered pairs with 64-pair global batches. The study runs that loop on accelerate's own
machinery, built so that **the number of processes changes nothing but speed**; the pieces live where
their concept does, and this module is the command line that launches them:

* Random numbers are per prompt (:func:`tpo_core.plumbing.streams.stream_generator`), in a sharded run as in a
  single-process one, so what a prompt receives never depends on which process handles it.
* Collection (:func:`tpo_core.tpo.empirical.collect_iteration`): every process holds the same selector and
  selects every prompt's arm; groups of ``group_size`` prompts are dealt to the processes
  (:func:`tpo_core.plumbing.sharding.deal`), their outcomes gathered and replayed into every selector in prompt
  order (the pooled pulls and wins, in the single-process order: identical, not merely close).
* Files: every write goes through the main process, atomically, followed by a barrier
  (:func:`tpo_core.plumbing.sharding.on_main`).
* Training (:class:`tpo_core.tpo.trainer.PreferenceTrainer`): each *global* micro-batch of the shuffled order is
  split across processes (:func:`tpo_core.plumbing.sharding.local_batches`) and each process's summed loss weighted
  by ``num_processes / global batch size``, so DDP's gradient average is the gradient of the global mean;
  the reference log-probabilities are computed once, in blocks dealt to the processes.
  :func:`tpo_core.plumbing.sharding.per_device_batch` keeps the study's global batch independent of the process count.
* Evaluation (:func:`tpo_core.study.pipeline.gold_on_test`): test prompts dealt the same way.

Model calls on other batches can differ in the last float bits, so the exact reference of an ``n``-process
run is one process whose study was loaded with ``sharding=Sharding(group_size)``, the same ``group_size``.
"""

from __future__ import annotations

from pathlib import Path

from tpo_core.plumbing.sharding import Sharding

__all__ = ["main"]


# ------------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> None:
    """``accelerate launch [--config_file F] -m tpo_core.commands.distributed --preset paper --run tpo --seed 100``.

    Runs :func:`tpo_core.study.pipeline.run` (and, with ``--evaluate``, :func:`tpo_core.study.pipeline.evaluate_run`) for each
    ``--run`` and seed, sharded over the launched processes; the notebooks read the results with their
    ``group_size`` parameter set to the launch's ``--group-size`` (``load_study(group_size=)``). ``--model-path HUB_ID=FOLDER`` maps the preset's
    models to local folders (as ``load_study(model_paths=)``), and ``--models-dir DIR`` maps all of them from the
    folder :mod:`tpo_core.commands.download` filled; ``--set field=value`` overrides preset fields
    (values parsed as Python literals)."""
    import argparse

    from tpo_core.commands.cli import key_values, parse_settings
    from tpo_core.study import pipeline as S

    ap = argparse.ArgumentParser(prog="python -m tpo_core.commands.distributed", description=main.__doc__)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--run", action="append", choices=sorted(S.RUNS),
                    help="repeatable; default: tpo. Each run on each seed, in the order given")
    ap.add_argument("--seed", type=int, action="append", help="repeatable; default: the preset's seeds")
    ap.add_argument("--results-root", default="results")
    ap.add_argument("--group-size", type=int, default=1)
    ap.add_argument("--model-path", action="append", default=[], metavar="HUB_ID=FOLDER")
    ap.add_argument("--models-dir", default=None, help="the --dest of python -m tpo_core.commands.download")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--evaluate", action="store_true")
    args = ap.parse_args(argv)

    try:
        overrides, paths = parse_settings(args.set), key_values(args.model_path)
    except ValueError as err:
        ap.error(str(err))
    if args.models_dir is not None:
        from tpo_core.commands.download import model_paths
        from tpo_core.world.presets import get_preset

        paths = {**model_paths(get_preset(args.preset, **overrides), args.models_dir), **paths}
    sharding = Sharding(args.group_size)
    with sharding.state.main_process_first():  # the main process trains and caches an SFT pi_0 first
        study = S.load_study(args.preset, results_root=args.results_root, sources="arms", model_paths=paths,
                             sharding=sharding, **overrides)
    seeds = args.seed or list(study.preset.seeds)
    for name in args.run or ["tpo"]:
        for seed in seeds:
            S.run(study, name, seed)
        if args.evaluate:
            S.evaluate_run(study, name, seeds)
        if Sharding().state.is_main_process:
            print(f"done: {name}, seeds {seeds}, under {Path(args.results_root) / study.preset.name}")


if __name__ == "__main__":
    main()
