"""How a canary weight becomes a traffic split.

Router "service" (the default) puts the stable and canary pods behind one
Service, so kube-proxy spreads connections over ready endpoints: the canary's
share is canary / (stable + canary) ready replicas. Stable keeps its replicas;
the canary gets as many as come closest to the asked weight (at least one
while a canary runs). That only approximates the weight: 1 stable replica and
1 canary replica is 50% whatever was asked, and the split is per connection,
not per request. Router "gateway-api" writes an HTTPRoute whose backend
weights give the exact percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Router = Literal["service", "gateway-api"]
# Without an explicit cap the service router adds at most this many canary
# replicas per stable replica (9 per 1 reaches 90%).
SERVICE_MAX_FACTOR = 9


@dataclass(frozen=True)
class Split:
    router: Router
    requested: int  # canary weight the analysis asked for, percent
    stable_replicas: int
    canary_replicas: int
    stable_weight: int  # percent; exact for gateway-api, expected for service
    canary_weight: int
    exact: bool
    note: str  # for status and Events; says when the split only approximates

    def to_status(self) -> dict[str, int]:
        """status.traffic in wire form."""
        return {"stable": self.stable_weight, "canary": self.canary_weight}


def plan_split(
    router: Router,
    weight: int,
    stable_replicas: int | None,
    max_canary_replicas: int | None = None,
) -> Split:
    """The replicas and weights that send `weight` percent to the canary.

    `stable_replicas` is spec.replicas (None means the default, 1). With
    `weight` 0 there is no canary: it gets no replicas and no traffic."""
    weight = max(0, min(100, weight))
    stable = 1 if stable_replicas is None else stable_replicas
    if router == "gateway-api":
        return _gateway_split(weight, stable, max_canary_replicas)
    return _service_split(weight, stable, max_canary_replicas)


def _gateway_split(weight: int, stable: int, cap: int | None) -> Split:
    # Enough canary pods for its share of what the stable replicas carry.
    canary = 0 if weight == 0 else max(1, math.ceil(stable * weight / 100))
    if cap is not None and weight:
        canary = max(1, min(canary, cap))
    note = f"HTTPRoute weights: stable {100 - weight}%, canary {weight}%"
    return Split("gateway-api", weight, stable, canary, 100 - weight, weight, True, note)


def _service_split(weight: int, stable: int, cap: int | None) -> Split:
    if weight == 0:
        return Split("service", 0, stable, 0, 100, 0, True, "no canary: all traffic on stable")
    cap = max(1, cap if cap is not None else SERVICE_MAX_FACTOR * max(stable, 1))
    # canary / (stable + canary) = weight / 100; 100% is out of reach, take the cap
    canary = cap if weight >= 100 else int(stable * weight / (100 - weight) + 0.5)
    canary = max(1, min(canary, cap))
    effective = effective_percent(stable, canary)
    exact = effective == weight
    note = (
        f"Service split by ready replicas: {stable} stable + {canary} canary "
        f"give the canary {effective}%"
    )
    if not exact:
        note += f" (asked {weight}%; the Service router only approximates, use gateway-api)"
    return Split("service", weight, stable, canary, 100 - effective, effective, exact, note)


def effective_percent(stable_ready: int, canary_ready: int) -> int:
    """The canary's share of a Service with these ready replicas, rounded."""
    total = stable_ready + canary_ready
    if total <= 0:
        return 0
    return int(100 * canary_ready / total + 0.5)
