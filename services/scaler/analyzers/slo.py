"""The SLO analyzer: size a model for its arrival rate, from what one replica of each variant can serve
while meeting the model's latency targets, learned online (docs/algorithms.md, "SLO analyzer").

Model (what a vLLM replica does, iteration by iteration): every running request gets one token per
iteration and an iteration takes ``base + s * n`` seconds for ``n`` running requests, so the
inter-token latency is ``ITL = base + s * n``; with ``n = x * ITL`` running (Little's law, ``x`` the
tokens per second the replica generates) that is ``ITL = base / (1 - s * x)``, or

    1 / ITL = alpha - beta * x          (alpha = 1 / base, beta = s / base)

a straight line in two figures the fetcher measures for each pod over the same rate window: the output
tokens it generated per second, ``x``, and its average ITL — one point per pod per snapshot. (Prompt
tokens prefilled in an iteration slow it in proportion to the same rate, so they only change the
slope.) A least-squares line through a variant's recent points gives ``alpha`` and ``beta``; on it, a
replica generates ``x* = (alpha - 1 / targetITL) / beta`` tokens/s at the target. The capacity used is
more careful than ``x*``: the largest load at which the line's lower confidence bound (``Z`` standard
errors of the fitted mean, which grow with the distance from the loads seen) still meets the target —
close to ``x*`` once many points at varied loads pin the line down, well below it while few, noisy or
far-off points do. Divided by the model's output tokens per request it is requests per second, and no
more than the KV cache holds (``x * ITL`` running requests, at the latency the same bound predicts for
that load). Demand is the model's arrival rate plus what waits in
queues (the gateway's and the replicas'), drained over ``DRAIN_SECONDS``; sizing is V2's — required and
spare capacity against anticipated and ready supply, cheapest per unit capacity first (``sizing.py``) —
in requests per second.

Arrival rate is linear in load, where token occupancy (V2's demand) is not: a replica's tokens in use
fall steeply as it gets faster, so an over-provisioned model looks idle to V2 and it gives back too
much; the rate does not depend on how fast the model serves it.

Failure modes, and what the analyzer does about them (each also in docs/algorithms.md):
- too few points, points at one load only, or a slope not clearly below zero (less than ``MIN_T``
  standard errors): **not fitted**. While any running variant is not fitted, V2 (token capacity) decides for the whole
  group and the decision says so — the SLO analyzer never sizes, and so never shrinks, on an estimate
  it has not fitted. A variant at zero replicas with points but no fit takes a conservative bound
  instead (the most a replica was seen to serve within the target, or its load scaled down by how far
  it missed), used only to choose where to grow;
- the line bends far past the target (prefills stall whole batches): points beyond ``FIT_LIMIT`` times
  the target are left out of the fit, which is made where decisions are made;
- a KV cache that fills before the latency target binds: capacity is capped at what the cache holds
  (``n = x * ITL`` running requests of the model's shape within ``kvCacheThreshold``, at the ITL the
  line predicts for that load — below the target, since the cache binds first);
- the time to first token is not modelled: past capacity it is queueing that makes it grow, and sizing
  below capacity (``scaleUpThreshold``) with queues counted as demand is what keeps it short.
"""

from __future__ import annotations

import math
import statistics
from array import array
from dataclasses import dataclass, field
from typing import Final

from services.scaler.analyzers import GroupView, Recommendation, VariantView, sizing
from services.scaler.analyzers.capacity import DEFAULT_TOKENS_PER_REQUEST, CapacityAnalyzer, CapacityMemory
from services.scaler.digest import Digest
from services.scaler.scaling_config import ScalingConfig
from shared.messages import CapacityFigures, DecisionNumbers

POINTS: Final = 1000  # recent points (one per pod per snapshot) kept per variant
MIN_POINTS: Final = 6
MIN_T: Final = 3.0  # the slope must be at least this many standard errors below zero
Z: Final = 2.0  # the capacity is the load whose predicted 1/ITL is this many standard errors inside the target
FIT_LIMIT: Final = 1.5  # points with an ITL beyond this multiple of the target are left out of the fit
DRAIN_SECONDS: Final = 30.0  # queued requests count as demand to be served within this long


class Points:
    """A variant's last ``POINTS`` points, oldest first: the output tokens per second one replica
    generated over the rate window, and its average ITL (seconds) over the same window. Two arrays of
    doubles used as a ring, 16 bytes a point: a deque of point objects took about 110, and a full
    memory is kept for every variant (docs/benchmarks.md, "Memory per tracked VA")."""

    __slots__ = ("_head", "_itl", "_tokens")

    def __init__(self) -> None:
        self._tokens = array("d")
        self._itl = array("d")
        self._head = 0  # where the next point goes once full: the oldest

    def append(self, tokens: float, itl: float) -> None:
        if len(self._tokens) < POINTS:
            self._tokens.append(tokens)
            self._itl.append(itl)
            return
        self._tokens[self._head], self._itl[self._head] = tokens, itl
        self._head = (self._head + 1) % POINTS

    def pairs(self) -> list[tuple[float, float]]:
        """``(tokens, itl)`` of every point, oldest first."""
        h = self._head
        return list(zip(self._tokens[h:] + self._tokens[:h], self._itl[h:] + self._itl[:h], strict=True))

    def __len__(self) -> int:
        return len(self._tokens)


@dataclass(frozen=True, slots=True)
class Fit:
    """A least-squares line ``1/ITL = alpha - beta * x`` through a variant's points, with what it takes
    to bound the line's error at any load: the residual spread ``sigma``, the points' mean load and
    ``sxx`` (the sum of squared deviations of their loads)."""

    alpha: float
    beta: float
    r2: float
    points: int
    fitted: bool
    bound: float  # tokens/s: the most one replica was seen to serve within the target
    sigma: float = 0.0
    mean_x: float = 0.0
    sxx: float = 0.0

    def tokens_at(self, itl: float) -> float:
        """Output tokens per second one replica generates at this inter-token latency, on the line; the
        conservative bound when not fitted."""
        if not self.fitted:
            return self.bound
        return max(0.0, (self.alpha - 1.0 / itl) / self.beta)

    def capacity_at(self, itl: float, *, running: float | None = None) -> float:
        """The most tokens per second at which the line's lower confidence bound (``Z`` standard errors
        of the fitted mean) still meets ``itl``: close to :meth:`tokens_at` once many points at varied
        loads pin the line down, well below it while few or noisy points do, or far from the loads seen.

        With ``running`` (the requests a replica's KV cache holds), also no more than puts that many
        running at the latency the bound predicts for the load (``n = x * ITL``): a cache that fills
        before the target binds fills at a lower latency than the target. Not fitted: the conservative
        bound, and the cache's requests at the target latency."""
        if not self.fitted:
            return self.bound if running is None else min(self.bound, running / itl)
        goal = 1.0 / itl

        def inside(x: float) -> bool:
            se = self.sigma * math.sqrt(1.0 / self.points + (x - self.mean_x) ** 2 / self.sxx)
            inverse_itl = self.alpha - self.beta * x - Z * se
            return inverse_itl >= goal and (running is None or inverse_itl * running >= x)

        hi = self.tokens_at(itl)
        if not inside(0.0):
            return 0.0
        lo = 0.0
        for _ in range(50):  # bisection: the bound falls monotonically beyond the mean load
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if inside(mid) else (lo, mid)
        return lo


@dataclass(slots=True)
class SloMemory:
    points: dict[str, Points] = field(default_factory=dict)  # a variant that has points
    output_tokens: float | None = None  # the model's last known output tokens per request

    def observe(self, variant: str, metrics: Digest) -> None:
        output_tokens = metrics.avg_output_tokens
        if output_tokens:
            self.output_tokens = output_tokens
        for replica in metrics.replicas:
            if replica.tokens_rate and replica.itl:  # a pod that generated tokens in the window
                points = self.points.get(variant)
                if points is None:
                    points = self.points[variant] = Points()
                points.append(replica.tokens_rate, replica.itl)

    def fit(self, variant: str, target_itl: float) -> Fit | None:
        known = self.points.get(variant)
        if not known:
            return None
        pts = known.pairs()
        within = [tokens for tokens, itl in pts if itl <= target_itl]
        beyond = [tokens * target_itl / itl for tokens, itl in pts if itl > target_itl]
        bound = max(within or beyond)
        # Far past the target the line bends (prefills stall whole batches): fit where decisions are made.
        pts = [(tokens, itl) for tokens, itl in pts if itl <= FIT_LIMIT * target_itl]
        unfitted = Fit(alpha=0.0, beta=0.0, r2=0.0, points=len(pts), fitted=False, bound=bound)
        if len(pts) < MIN_POINTS:
            return unfitted
        xs = [tokens for tokens, _ in pts]
        ys = [1.0 / itl for _, itl in pts]
        n = len(pts)
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mean_x) ** 2 for x in xs)
        if sxx <= 0.0:
            return unfitted  # one load only: no line
        sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
        beta = -sxy / sxx
        alpha = mean_y + beta * mean_x
        ss_tot = sum((y - mean_y) ** 2 for y in ys)
        ss_res = max(0.0, sum((y - (alpha - beta * x)) ** 2 for x, y in zip(xs, ys, strict=True)))
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
        sigma = math.sqrt(ss_res / (n - 2))
        slope_clear = beta > 0 and beta * math.sqrt(sxx) >= MIN_T * sigma
        fitted = alpha > 0 and slope_clear
        return Fit(
            alpha=alpha, beta=beta, r2=r2, points=n, fitted=fitted, bound=bound, sigma=sigma, mean_x=mean_x, sxx=sxx
        )


class SloAnalyzer:
    """Sizes for the arrival rate at the model's latency targets (``analyzer: slo``)."""

    name = "slo"

    def __init__(self, memory: SloMemory, capacity: CapacityMemory) -> None:
        self.memory = memory
        self.capacity = capacity

    def recommend(self, group: GroupView) -> Recommendation:
        config = group.config
        out = self._output_tokens(group)
        variants = [self._capacity(v, config, out) for v in group.variants]
        unfitted = [s.view.name for s, fit in variants if s.view.expected > 0 and (fit is None or not fit.fitted)]
        if unfitted:
            fallback = CapacityAnalyzer(self.capacity).recommend(group)
            return Recommendation(
                desired=fallback.desired,
                reason=fallback.reason,
                detail=f"latency not fitted yet for {', '.join(unfitted)}: V2 rules; {fallback.detail}",
                numbers=fallback.numbers,
            )
        rate = sum(v.metrics.arrival_rate or 0.0 for v in group.variants)
        gateway = max((v.metrics.gateway_queue or 0.0) for v in group.variants)
        waiting = sum(r.queue for v in group.variants for r in v.metrics.replicas)
        demand = rate + (gateway + waiting) / DRAIN_SECONDS
        sized = [s for s, _ in variants]
        b = sizing.balance(sized, demand, up=config.scale_up_threshold, down=config.scale_down_boundary)
        numbers = DecisionNumbers(
            replicas_total=sum(v.expected for v in group.variants),
            demand=b.demand,
            supply=b.supply,
            anticipated=b.anticipated,
            required=b.required,
            spare=b.spare,
            gateway_queue=gateway,
            capacities=tuple(
                CapacityFigures(
                    variant=s.view.name,
                    capacity=s.capacity,
                    source=s.source,
                    unit="requests/s",
                    fit_r2=None if fit is None else round(fit.r2, 3),
                    points=0 if fit is None else fit.points,
                )
                for s, fit in variants
            ),
        )
        figures = (
            f"demand {b.demand:.2f} req/s (arrivals {rate:.2f}, queued {gateway + waiting:g}), supply "
            f"{b.supply:.2f}, anticipated {b.anticipated:.2f}, required {b.required:.2f}, spare {b.spare:.2f}"
        )
        return sizing.recommend(sized, b, max_step=config.max_scale_up_step, figures=figures, numbers=numbers)

    def _output_tokens(self, group: GroupView) -> float:
        """The model's output tokens per request: its variants' averages weighted by their traffic (one
        variant's few completions in a window are a noisy figure), else the last known."""
        figures = [(v.metrics.avg_output_tokens, v.metrics.arrival_rate) for v in group.variants]
        weighted = [(out, rate) for out, rate in figures if out and rate]
        total = sum(rate for _, rate in weighted)
        if total > 0:
            return sum(out * rate for out, rate in weighted) / total
        if self.memory.output_tokens:
            return self.memory.output_tokens
        return DEFAULT_TOKENS_PER_REQUEST / 4

    def _capacity(self, view: VariantView, config: ScalingConfig, out: float) -> tuple[sizing.Sized, Fit | None]:
        itl_target = config.target_itl_ms / 1000.0
        fit = self.memory.fit(view.name, itl_target)
        if fit is None:
            return sizing.Sized(view, None, "unknown"), None
        cache = self.capacity.cache_tokens.get(view.name)
        shape = self.capacity.tokens_per_request or DEFAULT_TOKENS_PER_REQUEST
        running = None if cache is None else cache * config.kv_cache_threshold / shape
        tokens = fit.capacity_at(itl_target, running=running)
        capacity = tokens / out if tokens > 0 else None
        source = f"fit r2={fit.r2:.2f}" if fit.fitted else "bound"
        return sizing.Sized(view, capacity, source), fit
