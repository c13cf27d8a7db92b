"""What a shared pool of requests is allowed: concurrency (fixed or adaptive) and rate limits."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_AUTO_MAX = 64
DEFAULT_AUTO_START = 4


@dataclass(frozen=True)
class Adaptive:
    """AIMD settings for ``concurrency: auto``.

    The level starts at ``start``, grows by one after a window of ``level`` successful requests
    sent while the pool was saturated, and is multiplied by ``decrease`` (at most once per
    generation of requests) on a 429, a timeout or a ``Retry-After``. It stays in
    ``[1, max]``. The level refused is remembered: growing back onto it waits 2, 4, 8, ...
    windows (up to 128) as it is refused again and again, and a window served at it forgets it.
    """

    max: int = DEFAULT_AUTO_MAX
    start: int = DEFAULT_AUTO_START
    decrease: float = 0.7

    def __post_init__(self) -> None:
        if self.max < 1:
            raise ValueError(f"concurrency auto max must be >= 1, got {self.max}")
        if self.start < 1:
            raise ValueError(f"concurrency auto start must be >= 1, got {self.start}")
        if not 0.0 < self.decrease < 1.0:
            raise ValueError(f"concurrency auto decrease must be in (0, 1), got {self.decrease}")
        object.__setattr__(self, "start", min(self.start, self.max))


@dataclass(frozen=True)
class PoolLimits:
    """Limits of one pool (usually one endpoint) for the whole run.

    ``concurrency``: requests in flight at once (``None``: unbounded); ``adaptive``: use AIMD
    instead, bounded by ``adaptive.max``. ``rpm`` / ``tpm``: requests and tokens per
    ``period`` seconds (60 in real use; tests shrink it), enforced as a sliding window so no
    window of ``period`` seconds ever holds more than ``rpm`` requests (the window is held
    ``margin`` longer, 2% by default, to absorb network jitter).
    """

    concurrency: int | None = None
    adaptive: Adaptive | None = None
    rpm: float | None = None
    tpm: float | None = None
    period: float = 60.0
    max_pause: float = 60.0  # a Retry-After longer than this is capped
    # the window is held this fraction longer than ``period``: requests reach the provider
    # with a little jitter, and it counts by arrival, so an exact window could show rpm + 1
    margin: float = 0.02

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.concurrency is not None and self.adaptive is not None:
            raise ValueError("give either a fixed concurrency or adaptive, not both")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not math.isfinite(self.period) or self.period <= 0:
            raise ValueError(f"period must be > 0 seconds, got {self.period}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"margin must be in [0, 1], got {self.margin}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the wire (see :meth:`from_dict`)."""
        data = asdict(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolLimits:
        adaptive = data.get("adaptive")
        return cls(
            concurrency=data.get("concurrency"),
            adaptive=Adaptive(**adaptive) if adaptive else None,
            rpm=data.get("rpm"),
            tpm=data.get("tpm"),
            period=float(data.get("period", 60.0)),
            max_pause=float(data.get("max_pause", 60.0)),
            margin=float(data.get("margin", 0.02)),
        )


def parse_concurrency(value: Any) -> tuple[int | None, Adaptive | None]:
    """Read a suite's ``concurrency`` value: ``8``, ``"auto"`` or ``{auto: true, max: 32}``.

    Returns ``(fixed, adaptive)`` with exactly one of them set. Raises ``ValueError`` with a
    message saying what was expected (the caller prefixes the file and key).
    """
    expected = "expected a whole number >= 1, 'auto' or {auto: true, max: N}"
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{expected}, got {value}")
        return value, None
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return None, Adaptive()
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in ("auto", "max", "start"))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} in concurrency; {expected}")
        if value.get("auto") is not True:
            raise ValueError(f"concurrency mapping needs 'auto: true'; {expected}")
        fields: dict[str, int] = {}
        for name in ("max", "start"):
            if name in value:
                number = value[name]
                if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                    raise ValueError(f"concurrency.{name}: expected a whole number >= 1, "
                                     f"got {number!r}")
                fields[name] = number
        # the level never leaves [1, max]; only the default start gives way to a lower max
        bound = fields.get("max", DEFAULT_AUTO_MAX)
        if fields.get("start", 0) > bound:
            shown = str(bound) if "max" in fields else f"{bound}, the default"
            raise ValueError(f"concurrency.start: expected at most max ({shown}), "
                             f"got {fields['start']}")
        return None, Adaptive(**fields)
    raise ValueError(f"{expected}, got {type(value).__name__}")
