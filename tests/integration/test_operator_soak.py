"""Issue #9, property 7 (the operator's half): with 2,000 objects the
operator's memory stays flat over a soak.

Its own operator process watches one namespace of 2,000 TrainingRuns (whose
Dataset does not exist, so each reconcile is the operator's own work: a
status, an Event, a timer; no Job, no MLflow call). Through the soak a tenth
of them is deleted and created again each round and another tenth edited, so
the per-object bookkeeping (locks, the phase book, kopf's timers) comes and
goes. The operator's resident memory is sampled after every round; the last
rounds must not need more than the first ones after warm-up did, give or take
the allocator's slack.

Long: `make soak` runs it (SOAK_OBJECTS, SOAK_ROUNDS set its size); `make test`
leaves it out (marker `soak`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kube_helpers import wait_for
from kubernetes import client
from operator_helpers import operator_process
from training_helpers import orphan_run

from flywheel.api.common import GROUP, VERSION

pytestmark = [pytest.mark.integration, pytest.mark.soak]

OBJECTS = int(os.environ.get("SOAK_OBJECTS", "2000"))
ROUNDS = int(os.environ.get("SOAK_ROUNDS", "12"))
RESYNC = 15  # seconds: 2,000 timers firing every 15 s is ~130 reconciles a second
CHURN = OBJECTS // 10
# The last third of the rounds may use this much more than the first third:
# allocator slack, not growth with time.
SLACK = 1.10


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def list_runs(api, namespace: str) -> list[dict]:
    """Every TrainingRun, 500 a page: one list of 2,000 objects can outlast the
    apiserver's request timeout while the operator keeps it busy (504), and a
    busy answer is retried, as kubectl would be by a person."""
    items: list[dict] = []
    token = None
    while True:
        for attempt in range(10):
            try:
                page = api.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "trainingruns", limit=500, _continue=token
                )
                break
            except client.ApiException as err:
                if err.status < 500 or attempt == 9:
                    raise
                time.sleep(2)
        items += page["items"]
        token = page["metadata"].get("continue")
        if not token:
            return items


def reported_count(api, namespace: str) -> tuple[int, int]:
    """(objects, objects whose status reports their current generation)."""
    items = list_runs(api, namespace)
    done = [
        i
        for i in items
        if (i.get("status") or {}).get("observedGeneration") == i["metadata"]["generation"]
    ]
    return len(items), len(done)


@pytest.fixture
def soak_operator(control_plane, crds, namespace, tmp_path):
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "FLYWHEEL_RESYNC_SECONDS": str(RESYNC),
    }
    running = operator_process(env, tmp_path / "operator.log", namespace)
    running.start()
    yield running
    # Terminating with 2,000 objects' timers to cancel takes longer.
    running.stop(grace=120)


@pytest.mark.timeout(7200)
def test_memory_stays_flat_with_2000_objects(soak_operator, namespace, kube_api):
    api = client.CustomObjectsApi(kube_api)
    pid = soak_operator.process.pid

    def create(name: str) -> None:
        # As a client under load would: retry what the apiserver could not finish.
        for attempt in range(10):
            try:
                api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "trainingruns", orphan_run(name)
                )
                return
            except client.ApiException as err:
                if err.status == 409 and attempt:
                    return  # the timed-out attempt went through after all
                if err.status < 500:
                    raise
            time.sleep(2)
        raise AssertionError(f"could not create {name}")

    for i in range(OBJECTS):
        create(f"soak-{i}")
    wait_for(
        lambda: reported_count(api, namespace) == (OBJECTS, OBJECTS),
        timeout=1800,
        every=5,
        what=f"all {OBJECTS} objects to get a status",
    )
    samples = []
    for round_ in range(ROUNDS):
        # Churn: delete a tenth, edit another tenth, create the first tenth again.
        first = (round_ * CHURN) % OBJECTS
        gone = [f"soak-{(first + i) % OBJECTS}" for i in range(CHURN)]
        edited = [f"soak-{(first + CHURN + i) % OBJECTS}" for i in range(CHURN)]
        for name in gone:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns", name)
        for name in edited:
            patch = {"spec": {"trainer": {"seed": round_ + 1}}}
            api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "trainingruns", name, patch
            )
        wait_for(
            lambda: reported_count(api, namespace)[0] == OBJECTS - CHURN,
            timeout=600,
            every=5,
            what="the deleted objects to go (the operator releases its finalizer)",
        )
        for name in gone:
            create(name)
        wait_for(
            lambda: reported_count(api, namespace) == (OBJECTS, OBJECTS),
            timeout=600,
            every=5,
            what="every object to report its current generation",
        )
        time.sleep(2 * RESYNC)  # every timer fires at least once more
        samples.append(rss_mib(pid))
        print(f"soak round {round_ + 1}/{ROUNDS}: operator RSS {samples[-1]:.1f} MiB", flush=True)
    assert soak_operator.process.poll() is None, "the operator died during the soak"
    third = max(1, ROUNDS // 3)
    early, late = max(samples[:third]), max(samples[-third:])
    print(f"RSS over the soak (MiB): {[round(s, 1) for s in samples]}")
    assert late <= early * SLACK, f"memory grew from {early:.1f} to {late:.1f} MiB: {samples}"
