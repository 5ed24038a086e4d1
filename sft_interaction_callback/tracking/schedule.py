"""When to probe: the training steps at which interactions are extracted (DESIGN.md §8).

Probing one checkpoint costs ``num_probes * 2**n`` forward passes, so it runs on a
schedule. Step 0 (the model before the first optimizer step) is always probed: it is the
base point ``Omega_0`` that everything else is compared with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral

__all__ = ["ProbeSchedule"]

#: The default tiers for an unknown run length: (interval, last step of the tier).
DEFAULT_TIERS: tuple[tuple[int, int | None], ...] = ((5, 50), (25, 300), (100, None))
#: Run length at which the default tiers are used unscaled.
REFERENCE_STEPS = 3000
#: With a known run length, the late tier places at most about this many points.
LATE_POINTS = 60


def _nice(x: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is >= ``x`` (1 for ``x <= 1``)."""
    if x <= 1:
        return 1
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * exp >= x:
            return int(m * exp)
    return int(10 * exp)  # pragma: no cover - unreachable


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def _is_int(x: object) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


class ProbeSchedule:
    """The steps at which the callback probes the model.

    ``spec`` is one of

    * ``None`` (default): dense early, sparse later, because the denoising stage is short
      (DESIGN.md §1). With an unknown run length: every 5 steps up to 50, every 25 up to
      300, then every 100. With ``max_steps = T`` known, the rule scales:

      - ``f = min(1, T / 3000)``: for runs shorter than 3000 steps every interval and tier
        boundary is multiplied by ``f`` (intervals rounded, at least 1): every
        ``max(1, round(5 f))`` steps up to ``round(50 f)``, every ``max(1, round(25 f))``
        up to ``round(300 f)``, so a short run keeps roughly the same number of points
        (a 20-step run is probed at every step, a 300-step run about 40 times);
      - the late interval is ``max(1, round(100 f), nice(T / 60))`` where ``nice`` rounds
        up to 1, 2, 5 x 10^k, so a long run gets at most about 60 late points and the
        dense early tiers stay in absolute steps (where the first stage happens);
      - step ``T`` itself is always probed, so the curves end at the final model.

    * an ``int`` ``k >= 1``: every ``k`` steps (``k, 2k, ...``).
    * a list (or other iterable) of non-negative ints: exactly those steps.

    Within a tier ``(start, end]`` the probed steps are the multiples of its interval. In
    every case step 0 is probed too. ``should_probe(step)`` answers for one step and
    ``steps(max_steps)`` lists all probe steps in ``[0, max_steps]``; both follow the same
    rule. The scaling of the default uses the ``max_steps`` given to the constructor (or
    :meth:`bind`), not the one given to :meth:`steps`.
    """

    def __init__(
        self, spec: int | Iterable[int] | None = None, max_steps: int | None = None
    ) -> None:
        if max_steps is not None and (not _is_int(max_steps) or max_steps < 0):
            raise ValueError(
                f"max_steps must be a non-negative int (the run's total optimizer steps) or "
                f"None, got {max_steps!r}"
            )
        self.spec = spec
        self.max_steps = None if max_steps is None else int(max_steps)
        self._every: int | None = None
        self._steps: frozenset[int] | None = None
        self._tiers: list[tuple[int, int, int | None]] | None = None  # (interval, start, end)
        if spec is None:
            self._tiers = self._default_tiers(self.max_steps)
        elif isinstance(spec, bool) or isinstance(spec, (float, str, bytes)):
            raise ValueError(self._bad_spec(spec))
        elif _is_int(spec):
            if spec < 1:
                raise ValueError(
                    f"a probe interval must be an int >= 1 (probe every k steps), got {spec}; "
                    "pass None for the default schedule or a list of steps"
                )
            self._every = int(spec)
        elif isinstance(spec, Iterable):
            steps = list(spec)
            bad = [s for s in steps if not _is_int(s) or s < 0]
            if bad:
                raise ValueError(
                    "a list of probe steps must hold non-negative ints (optimizer steps), "
                    f"got {bad[:5]!r}"
                )
            self._steps = frozenset(int(s) for s in steps) | {0}
            self.spec = sorted(self._steps)
        else:
            raise ValueError(self._bad_spec(spec))

    @staticmethod
    def _bad_spec(spec: object) -> str:
        return (
            f"probe schedule must be None (default: dense early, sparse later), an int k >= 1 "
            f"(every k steps) or a list of non-negative int steps; got {spec!r}"
        )

    @staticmethod
    def _default_tiers(max_steps: int | None) -> list[tuple[int, int, int | None]]:
        if max_steps is None:
            out, start = [], 0
            for every, end in DEFAULT_TIERS:
                out.append((every, start, end))
                start = end if end is not None else start
            return out
        f = min(1.0, max_steps / REFERENCE_STEPS)
        (e_every, e_end), (m_every, m_end), (l_every, _) = DEFAULT_TIERS
        early_end = _round(e_end * f)
        mid_end = max(early_end, _round(m_end * f))
        late = max(1, _round(l_every * f), _nice(max_steps / LATE_POINTS))
        return [
            (max(1, _round(e_every * f)), 0, early_end),
            (max(1, _round(m_every * f)), early_end, mid_end),
            (late, mid_end, None),
        ]

    def bind(self, max_steps: int | None) -> ProbeSchedule:
        """The same spec with the run length known (the default scales with it)."""
        return ProbeSchedule(self.spec, max_steps=max_steps)

    def should_probe(self, step: int) -> bool:
        """Whether to probe after optimizer step ``step`` (step 0: before training)."""
        if not _is_int(step):
            raise ValueError(f"step must be an int, got {step!r}")
        if step == 0:
            return True
        if step < 0:
            return False
        if self._every is not None:
            return step % self._every == 0
        if self._steps is not None:
            return step in self._steps
        assert self._tiers is not None
        if self.max_steps is not None and step == self.max_steps:
            return True
        for every, start, end in self._tiers:
            if step > start and (end is None or step <= end):
                return step % every == 0
        return False  # pragma: no cover - the last tier is open-ended

    def steps(self, max_steps: int) -> list[int]:
        """All probe steps in ``[0, max_steps]``, ascending."""
        if not _is_int(max_steps) or max_steps < 0:
            raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}")
        if self._steps is not None:
            return sorted(s for s in self._steps if s <= max_steps)
        if self._every is not None:
            return list(range(0, max_steps + 1, self._every))
        assert self._tiers is not None
        out = {0}
        for every, start, end in self._tiers:
            last = max_steps if end is None else min(end, max_steps)
            first = (start // every + 1) * every  # first multiple of `every` after `start`
            out.update(range(first, last + 1, every))
        if self.max_steps is not None and self.max_steps <= max_steps:
            out.add(self.max_steps)
        return sorted(out)

    def __repr__(self) -> str:
        return f"ProbeSchedule({self.spec!r}, max_steps={self.max_steps!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProbeSchedule):
            return NotImplemented
        return (self.spec, self.max_steps) == (other.spec, other.max_steps)

    def __hash__(self) -> int:
        spec = tuple(self.spec) if isinstance(self.spec, list) else self.spec
        return hash((spec, self.max_steps))
