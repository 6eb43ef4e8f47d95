"""Traffic split, table-driven."""

import pytest

from flywheel.policy.traffic import effective_percent, plan_split


@pytest.mark.parametrize(
    ("weight", "stable", "cap", "canary_replicas", "canary_pct", "exact", "says"),
    [
        (0, 3, None, 0, 0, True, "no canary"),
        # 1 stable replica: any canary weight up to 50% is one canary pod = 50%
        (10, None, None, 1, 50, False, "asked 10%; the Service router only approximates"),
        (50, 1, None, 1, 50, True, "1 stable + 1 canary give the canary 50%"),
        # 9 stable: 1 canary pod gives exactly 10%
        (10, 9, None, 1, 10, True, "9 stable + 1 canary"),
        (20, 4, None, 1, 20, True, ""),
        (25, 4, None, 1, 20, False, "asked 25%"),  # 4/3 rounds to 1
        (30, 4, None, 2, 33, False, "asked 30%"),  # 1.71 rounds to 2
        (50, 3, None, 3, 50, True, ""),
        (75, 1, None, 3, 75, True, ""),
        # the cap bounds the canary; 100% never scales stable away
        (90, 1, None, 9, 90, True, ""),
        (100, 1, None, 9, 90, False, "asked 100%"),
        (80, 2, 3, 3, 60, False, "asked 80%"),
        # a stable track scaled to zero: the canary pod takes everything
        (10, 0, None, 1, 100, False, "0 stable + 1 canary"),
    ],
)
def test_service_router(weight, stable, cap, canary_replicas, canary_pct, exact, says):
    split = plan_split("service", weight, stable, cap)
    assert split.canary_replicas == canary_replicas
    assert split.stable_replicas == (1 if stable is None else stable)
    assert split.canary_weight == canary_pct
    assert split.stable_weight == 100 - canary_pct
    assert split.exact is exact
    assert says in split.note
    assert split.requested == weight
    assert split.to_status() == {"stable": 100 - canary_pct, "canary": canary_pct}


@pytest.mark.parametrize(
    ("weight", "stable", "cap", "canary_replicas"),
    [
        (0, 2, None, 0),
        (10, None, None, 1),
        (10, 4, None, 1),
        (30, 4, None, 2),
        (50, 10, None, 5),
        (100, 3, None, 3),
        (100, 10, 4, 4),
    ],
)
def test_gateway_router_is_exact(weight, stable, cap, canary_replicas):
    split = plan_split("gateway-api", weight, stable, cap)
    assert split.canary_weight == weight and split.stable_weight == 100 - weight
    assert split.exact
    assert split.canary_replicas == canary_replicas
    assert f"canary {weight}%" in split.note


@pytest.mark.parametrize(
    ("stable", "canary", "percent"),
    [(0, 0, 0), (1, 0, 0), (0, 2, 100), (1, 1, 50), (2, 1, 33), (1, 2, 67), (9, 1, 10)],
)
def test_effective_percent(stable, canary, percent):
    assert effective_percent(stable, canary) == percent
