"""The language-model study: loading a preset's world (:mod:`.loading`), the runs and their checkpoints
(:mod:`.runs`, :mod:`.run_loop`, :mod:`.checkpoints`), judging (:mod:`.judging`), Table 1 and its statistics
(:mod:`.table1`, :mod:`.evaluation`, :mod:`.power`), the source measurement, mechanism, pilot and tuning, and what
the notebooks call (:mod:`.pipeline`, :mod:`.report`). Only the study writes under ``results/``."""
