"""The theory of the paper, exact on finite problems: the KL-regularised contextual bandit and its objects (§2-3,
Lemma 3.1: :mod:`.exact`) and theoretical TPO, Algorithms 1-2 (§4: :mod:`.simulation`). Pure computation: nothing
here reads or writes files."""
