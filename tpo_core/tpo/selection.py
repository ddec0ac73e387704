"""Transfer policy selection: the win-rate bandit of empirical TPO (paper §5, Alg. 3).

Each arm is a candidate data-collection policy: a source policy ``π*_{r_w}`` (in practice a
Best-of-N re-ranking) or the **null arm**, the online policy ``π_OL`` itself (no transfer).
One pull is one prompt. Its reward ("win") is in ``[0, 1]``; the authors use 1 if the oracle's
best response is one of the transferred responses, else 0 (``annotate_data/Annotation.py``).
The null arm is credited a constant ``WR̂(π_OL) := null_value`` (0.55 in the authors' code, 0.5,
the win rate of a policy against itself, in the theory): its pulls are counted but its mean
never moves.

Rules (``policy=``), with ``n_w`` pulls and mean win ``m_w`` of arm ``w`` (``m_null = null_value``):

* ``"paper-ucb"``  ``m_w + bonus / sqrt(n_w)``. Paper §5, Alg. 3:
  ``WR̂(π*_{r_w}) + c·sqrt(log(1/δ)/n_w)`` with ``c·sqrt(log 1/δ) = bonus = 1.0``, compared against
  ``WR̂(π_OL) := 0.55``. The null arm gets the same bonus, as in the authors' ``UCB``
  (``annotate_data/utils.py``).
* ``"ucb1"``  ``m_w + bonus·sqrt(2 ln t / n_w)`` with ``t`` the total pulls (Auer et al., 2002);
  identical to mabwiser's ``UCB1(alpha=bonus)``.
* ``"thompson"``  sample ``Beta(1 + wins_w, 1 + n_w - wins_w)`` per source arm (fractional wins allowed);
  the null arm is a point mass at ``null_value``.
* ``"uniform"``  an arm uniformly at random.
* ``"fixed:<arm>"``  always ``<arm>`` (the pure-exploitation baselines; it ignores ``warmup``).

Conventions.

* Untried arms come first under both UCB rules (index ``+inf``, set explicitly; the authors' code gets
  the same effect from ``1/sqrt(0 + 1e-6) = 1000``). Ties go to the first arm in ``arms`` order.
* Batched feedback, as in the authors' distributed code: ``update()`` always records the pull, but the
  statistics that ``select()`` reads are a snapshot refreshed only after every ``update_every``-th update.
  The first ``warmup`` calls to ``select()`` draw ``rng.integers(len(arms))`` (uniform). The paper
  (4 workers × 50 prompts) is ``update_every=200, warmup=200``: uniform for 200 prompts, then the
  arg-max arm of the last snapshot for each whole batch of 200.
* Randomness comes only from ``self.rng`` (``numpy.random.default_rng(seed)``). Thompson draws one
  ``rng.beta`` per source arm, in ``arms`` order, at every post-warmup ``select()``.
* Statistics across iterations: the paper resets them every iteration; call :meth:`reset` for that.
  To carry them over instead, keep using the same object, or save :meth:`state_dict` (plain JSON
  types, generator state included) and restore it with :meth:`load_state_dict` / :meth:`from_state_dict`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["NULL_ARM", "ORACLE_ARM", "TransferSelector", "POLICIES"]

#: The arm that transfers nothing: the online policy π_OL's own responses (the authors call it ``null``;
#: named ``online`` here so that result files read back with plain ``pandas.read_csv``, which turns the
#: string ``null`` into NaN).
NULL_ARM = "online"

#: The arm of the positive control: Best-of-N by the simulated human r* itself (the human as its own source).
#: Only the ``exploit-oracle`` run transfers from it; TPO and the exploit baselines never see it.
ORACLE_ARM = "human"

POLICIES = ("paper-ucb", "ucb1", "thompson", "uniform", "fixed:<arm>")
_FORMAT = "tpo_core.selection/1"
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class TransferSelector:
    """Pick the arm (source policy or ``null_arm``) that collects data for the next prompt.

    ``stats()`` columns: ``pulls`` and ``mean`` are live (every update so far, including those not yet
    in the snapshot); ``mean`` is NaN for an untried source arm and ``null_value`` for the null arm.
    ``index`` is the last computed score: the UCB value at the last refresh (``+inf`` while untried;
    every arm is ``+inf`` after construction or :meth:`reset`), the last Thompson sample (NaN before
    the first one), and NaN for ``uniform`` and ``fixed`` (they compute no score).
    """

    def __init__(self, arms: Sequence[str], policy: str = "paper-ucb", bonus: float = 1.0,
                 null_arm: str | None = "null", null_value: float = 0.55, update_every: int = 1,
                 warmup: int = 0, seed=None):
        if isinstance(arms, str) or not hasattr(arms, "__iter__"):
            raise ValueError(f"arms must be a list of arm names, got {arms!r}")
        self.arms = tuple(arms)
        if not self.arms:
            raise ValueError("arms must not be empty")
        if not all(isinstance(a, str) for a in self.arms):
            raise ValueError(f"arm names must be strings, got {list(self.arms)!r}")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"duplicate arm names in {list(self.arms)!r}")
        if null_arm is not None and null_arm not in self.arms:
            raise ValueError(f"null_arm {null_arm!r} is not one of the arms {list(self.arms)!r} "
                             "(pass null_arm=None for no null arm)")
        self.null_arm = null_arm
        self.bonus = _real(bonus, "bonus", 0.0, math.inf)
        self.null_value = _real(null_value, "null_value", 0.0, 1.0)
        self.update_every = _integer(update_every, "update_every", 1)
        self.warmup = _integer(warmup, "warmup", 0)
        if not isinstance(policy, str):
            raise ValueError(f"policy must be a string, got {policy!r}")
        self.policy = policy
        self._fixed = None
        if policy.startswith("fixed:"):
            self._fixed = policy[len("fixed:"):]
            if self._fixed not in self.arms:
                raise ValueError(f"{policy!r}: arm {self._fixed!r} is not one of {list(self.arms)!r}")
        elif policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
        self._null = None if null_arm is None else self.arms.index(null_arm)
        self.rng = np.random.default_rng(seed)
        self.reset()

    # ------------------------------------------------------------------ core loop
    def reset(self) -> None:
        """Zero all statistics and restart warmup and batching (paper mode: once per iteration).

        The generator is *not* reseeded: it continues its stream."""
        k = len(self.arms)
        self._pulls, self._wins = [0] * k, [0.0] * k
        self._snap_pulls, self._snap_wins = [0] * k, [0.0] * k
        self._n_updates = self._n_selects = 0
        self._index = [math.nan] * k
        self._refresh()

    def select(self) -> str:
        """Return the name of the arm for the next prompt."""
        self._n_selects += 1
        if self._fixed is not None:
            return self._fixed
        if self.policy == "uniform" or self._n_selects <= self.warmup:
            return self.arms[int(self.rng.integers(len(self.arms)))]
        if self.policy == "thompson":
            self._index = [self.null_value if i == self._null else
                           float(self.rng.beta(1.0 + w, 1.0 + n - w))
                           for i, (n, w) in enumerate(zip(self._snap_pulls, self._snap_wins))]
        # explicit tie rule: the first arm (in ``arms`` order) with the largest index
        return self.arms[max(range(len(self.arms)), key=self._index.__getitem__)]

    def update(self, arm: str, win: float) -> None:
        """Record one pull of ``arm`` with reward ``win`` in [0, 1].

        For the null arm the pull is counted but ``win`` is ignored (its mean stays ``null_value``).
        Every ``update_every``-th update refreshes the snapshot that ``select()`` reads."""
        if arm not in self.arms:
            raise ValueError(f"unknown arm {arm!r}; arms are {list(self.arms)!r}")
        win = _real(win, "win", 0.0, 1.0)
        i = self.arms.index(arm)
        self._pulls[i] += 1
        if i != self._null:
            self._wins[i] += win
        self._n_updates += 1
        if self._n_updates % self.update_every == 0:
            self._refresh()

    def stats(self) -> pd.DataFrame:
        """Per-arm table: ``arm, pulls, mean, index`` (see the class docstring)."""
        return pd.DataFrame({
            "arm": list(self.arms),
            "pulls": np.array(self._pulls, dtype=np.int64),
            "mean": [self._mean(i, self._pulls, self._wins) for i in range(len(self.arms))],
            "index": np.array(self._index, dtype=float),
        })

    # ------------------------------------------------------------------ rules
    def _mean(self, i, pulls, wins):
        if i == self._null:
            return self.null_value
        return wins[i] / pulls[i] if pulls[i] else math.nan

    def _ucb(self, i):
        n = self._snap_pulls[i]
        if n == 0:
            return math.inf  # untried first
        mean = self._mean(i, self._snap_pulls, self._snap_wins)
        if self.policy == "paper-ucb":  # Alg. 3: WR̂ + c·sqrt(log(1/δ)/n_w) with c·sqrt(log 1/δ) = bonus
            return mean + self.bonus / math.sqrt(n)
        t = sum(self._snap_pulls)  # UCB1 (Auer et al., 2002), same expression as mabwiser
        return mean + self.bonus * math.sqrt(2 * math.log(t) / n)

    def _refresh(self):
        """Copy the live counts into the snapshot; recompute UCB indices."""
        self._snap_pulls, self._snap_wins = list(self._pulls), list(self._wins)
        if self.policy in ("paper-ucb", "ucb1"):
            self._index = [self._ucb(i) for i in range(len(self.arms))]

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        """Constructor arguments except ``seed`` (the generator state is in :meth:`state_dict`)."""
        return {"arms": list(self.arms), "policy": self.policy, "bonus": self.bonus,
                "null_arm": self.null_arm, "null_value": self.null_value,
                "update_every": self.update_every, "warmup": self.warmup}

    def state_dict(self) -> dict:
        """Everything needed to continue exactly, as plain JSON types (``json.dumps``-able)."""
        return {"format": _FORMAT, "config": self.config(),
                "pulls": list(self._pulls), "wins": list(self._wins),
                "snap_pulls": list(self._snap_pulls), "snap_wins": list(self._snap_wins),
                "index": [x if math.isfinite(x) else repr(x) for x in self._index],
                "n_updates": self._n_updates, "n_selects": self._n_selects,
                "rng": _plain(self.rng.bit_generator.state)}

    @classmethod
    def from_state_dict(cls, state: dict) -> TransferSelector:
        """Build a selector from a saved state (its config included)."""
        if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
            raise ValueError("malformed state dict: no 'config' mapping")
        try:
            sel = cls(**state["config"])
        except TypeError as err:
            raise ValueError(f"malformed state dict config: {err}") from None
        sel.load_state_dict(state)
        return sel

    def load_state_dict(self, state: dict) -> None:
        """Restore statistics, counters and generator state. The saved config must equal this one.

        All checks run before anything is changed; a bad state raises ``ValueError``."""
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"malformed state dict: expected a dict with format {_FORMAT!r}")
        missing = {"config", "pulls", "wins", "snap_pulls", "snap_wins", "index", "n_updates",
                   "n_selects", "rng"} - set(state)
        if missing:
            raise ValueError(f"malformed state dict: missing keys {sorted(missing)}")
        if state["config"] != self.config():
            raise ValueError(f"state dict config {state['config']!r} does not match {self.config()!r}")
        k = len(self.arms)
        try:
            pulls = [_integer(x, "pulls", 0) for x in _seq(state["pulls"], k)]
            snap_pulls = [_integer(x, "snap_pulls", 0) for x in _seq(state["snap_pulls"], k)]
            wins = [_real(x, "wins", 0.0, math.inf) for x in _seq(state["wins"], k)]
            snap_wins = [_real(x, "snap_wins", 0.0, math.inf) for x in _seq(state["snap_wins"], k)]
            index = [float(x) if x in ("inf", "nan") else _real(x, "index", -math.inf, math.inf, False)
                     for x in _seq(state["index"], k)]
            n_updates = _integer(state["n_updates"], "n_updates", 0)
            n_selects = _integer(state["n_selects"], "n_selects", 0)
            if any(w > n for w, n in zip(wins + snap_wins, pulls + snap_pulls)):
                raise ValueError("wins exceed pulls")
            if sum(pulls) != n_updates or any(s > p for s, p in zip(snap_pulls, pulls)):
                raise ValueError("pulls, snap_pulls and n_updates are inconsistent")
            rs = state["rng"]
            if not isinstance(rs, dict) or rs.get("bit_generator") not in _BIT_GENERATORS:
                raise ValueError(f"unsupported generator state {rs!r}")
            bit_generator = getattr(np.random, rs["bit_generator"])()
            bit_generator.state = rs
        except (TypeError, KeyError, ValueError) as err:
            raise ValueError(f"malformed state dict: {err}") from None
        self._pulls, self._wins, self._snap_pulls, self._snap_wins = pulls, wins, snap_pulls, snap_wins
        self._index, self._n_updates, self._n_selects = index, n_updates, n_selects
        self.rng = np.random.Generator(bit_generator)


# ---------------------------------------------------------------------- validation helpers
def _real(x, name, lo, hi, finite=True):
    """``float(x)`` if it is a real number in [lo, hi] (finite unless ``finite=False``; never NaN)."""
    if not isinstance(x, (numbers.Real, np.bool_)):
        raise ValueError(f"{name} must be a real number, got {x!r}")
    x = float(x)
    if math.isnan(x) or not lo <= x <= hi or (finite and math.isinf(x)):
        kind = "finite number" if finite else "number"
        raise ValueError(f"{name} must be a {kind} in [{lo}, {hi}], got {x!r}")
    return x


def _integer(x, name, lo):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral) or x < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {x!r}")
    return int(x)


def _seq(x, k):
    if not isinstance(x, (list, tuple)) or len(x) != k:
        raise ValueError(f"expected a list of length {k}, got {x!r}")
    return x


def _plain(obj):
    """numpy containers/scalars -> JSON types (MT19937 keeps its key in an array)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj.item() if isinstance(obj, np.generic) else obj
