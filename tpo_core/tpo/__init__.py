"""Empirical TPO, the algorithm (paper §5, Alg. 3), in memory: the win-rate bandit (:mod:`.selection`), Best-of-N
transfer and the human's labels (:mod:`.preferences`), one iteration's collection (:mod:`.empirical`), the
preference losses (:mod:`.losses`), response log-probabilities (:mod:`.logprobs`) and the trainer (:mod:`.trainer`).
Nothing here reads or writes files or knows about cache identities: the study keeps the results."""
