"""Serving throughput and latency: `flywheel serve` vs `mlflow models serve`
vs MLServer (sklearn runtime), the same fitted models, the same core.

The models: a random forest and a logistic regression (scaled) fitted on
scikit-learn's breast-cancer data set (30 numeric features), logged once
to a private `mlflow server` (SQLite, local artifacts) with the skops
format as flywheel's trainer logs them. flywheel and MLflow load the
registered version from it; MLServer loads the same fitted estimator,
dumped with joblib (its sklearn runtime's format), in its own venv
(.cache/bench/mlserver-venv, pinned by mlserver-requirements.txt).

Every server runs one worker process pinned to core 1 (`taskset -c 1`);
the load generator (loadgen.py) runs pinned to core 0 with the same
concurrency against each. Bodies: the Open Inference Protocol v2 body (one
[rows, 30] FP64 tensor) for flywheel and MLServer, MLflow's
`dataframe_split` for flywheel's and MLflow's /invocations. The servers
run side by side (idle ones use no CPU) and the runs are interleaved, so a
slow phase of the machine hits every server alike.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench_report import goal, ratio
from common import (
    CACHE,
    CLIENT_CPUS,
    HOST,
    MLSERVER_VENV,
    SERVER_CPUS,
    VENV_BIN,
    Child,
    clean_env,
    free_port,
    http_post,
    log,
    pinned,
    start,
    stop,
    venv_versions,
    wait_ready,
)

BENCH = Path(__file__).resolve().parent
WORK = CACHE / "serving"
MLSERVER_REQUIREMENTS = BENCH / "mlserver-requirements.txt"
CONCURRENCY = 16
BODIES = 64  # distinct request bodies, cycled


# --- the models ------------------------------------------------------------------


def fit_models(names: list[str]) -> tuple[Any, dict[str, Any]]:
    """The data set's frame and the fitted estimators by name."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target
    makers = {
        "random_forest": lambda: RandomForestClassifier(n_estimators=100, random_state=0),
        "logistic_regression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=5000)
        ),
    }
    return X, {name: makers[name]().fit(X, y) for name in names}


def log_models(tracking_uri: str, X: Any, models: dict[str, Any]) -> dict[str, str]:
    """Each model logged and registered as flywheel's trainer logs it; name -> models:/ URI."""
    import mlflow
    import skops.io as sio
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("flywheel-bench")
    uris = {}
    for name, model in models.items():
        signature = infer_signature(X, model.predict(X))
        with mlflow.start_run(run_name=name):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                input_example=X.head(5),
                serialization_format="skops",
                skops_trusted_types=sio.get_untrusted_types(data=sio.dumps(model)),
                registered_model_name=f"bench-{name.replace('_', '-')}",
            )
        uris[name] = f"models:/bench-{name.replace('_', '-')}/{info.registered_model_version}"
    return uris


def bodies(X: Any, batch: int) -> dict[str, list[str]]:
    """BODIES distinct bodies of `batch` rows each, per protocol."""
    rows = X.to_numpy()
    columns = [str(c) for c in X.columns]
    out: dict[str, list[str]] = {"v2": [], "invocations": []}
    for i in range(BODIES):
        picked = [rows[(i * batch + j) % len(rows)].tolist() for j in range(batch)]
        flat = [value for row in picked for value in row]
        out["v2"].append(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": [batch, len(columns)],
                            "datatype": "FP64",
                            "data": flat,
                        }
                    ]
                }
            )
        )
        out["invocations"].append(
            json.dumps({"dataframe_split": {"columns": columns, "data": picked}})
        )
    return out


# --- the servers -------------------------------------------------------------------


def mlflow_server() -> tuple[Child, str]:
    directory = WORK / "mlflow"
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "artifacts").mkdir(parents=True)
    port = free_port()
    child = start(
        "mlflow-tracking",
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{directory / 'mlflow.db'}",
            "--artifacts-destination",
            (directory / "artifacts").as_uri(),
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        # Only hosts the model; MLflow 3's job runner (eight processes) is not needed.
        clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        cpus=None,
    )
    uri = f"http://{HOST}:{port}"
    wait_ready(child, f"{uri}/health", timeout=180)
    return child, uri


def ensure_mlserver() -> Path:
    """The MLServer venv, made from the pinned requirements when missing."""
    python = MLSERVER_VENV / "bin" / "python"
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        log(f"making {MLSERVER_VENV} from {MLSERVER_REQUIREMENTS.name}")
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(MLSERVER_REQUIREMENTS)],
            check=True,
        )
    return python


def start_flywheel(name: str, model_uri: str, tracking: str, log_uri: str | None) -> Child:
    port = free_port()
    env = clean_env(
        MLFLOW_TRACKING_URI=tracking,
        FLYWHEEL_MODEL_URI=model_uri,
        FLYWHEEL_MODEL_NAME="model",
        FLYWHEEL_MODEL_VERSION="bench",
        FLYWHEEL_PORT=str(port),
        FLYWHEEL_BIND_ADDRESS=HOST,
        FLYWHEEL_WORKERS="1",
        FLYWHEEL_TERMINATION_LOG=str(WORK / f"{name}.termination"),
    )
    if log_uri:
        env["FLYWHEEL_INFERENCE_LOG_URI"] = log_uri
    child = start(name, [str(VENV_BIN / "flywheel"), "serve"], env, SERVER_CPUS)
    child.port = port  # type: ignore[attr-defined]
    wait_ready(child, f"http://{HOST}:{port}/v2/health/ready")
    return child


def start_mlflow_serve(name: str, model_uri: str, tracking: str) -> Child:
    port = free_port()
    env = clean_env(
        MLFLOW_TRACKING_URI=tracking,
        UVICORN_ACCESS_LOG="false",  # as flywheel and MLServer here: no line per request
    )
    argv = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        HOST,
        "-p",
        str(port),
        "-w",
        "1",
    ]
    child = start(name, argv, env, SERVER_CPUS)
    child.port = port  # type: ignore[attr-defined]
    wait_ready(child, f"http://{HOST}:{port}/ping")
    return child


def start_mlserver(name: str, model: Any, parallel_workers: int) -> Child:
    import joblib

    python = ensure_mlserver()
    directory = WORK / name
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "model").mkdir(parents=True)
    joblib.dump(model, directory / "model" / "model.joblib")
    port = free_port()
    settings = {
        "host": HOST,
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": parallel_workers,
        "debug": False,  # no access-log line per request, as the others here
    }
    (directory / "settings.json").write_text(json.dumps(settings))
    (directory / "model" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "model",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    env = clean_env(PATH=f"{python.parent}:{os.environ.get('PATH', '')}")
    child = start(
        name, [str(python.parent / "mlserver"), "start", "."], env, SERVER_CPUS, directory
    )
    child.port = port  # type: ignore[attr-defined]
    wait_ready(child, f"http://{HOST}:{port}/v2/models/model/ready")
    return child


# --- load ---------------------------------------------------------------------------


def session_cpu_seconds(session: int) -> float:
    """CPU time (user + system) of every process in a server's session: the
    supervisor and its workers (each server starts in a session of its own)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def measure_target(
    name: str,
    batch: int,
    targets: dict[str, tuple[Child, str, str]],
    files: dict[str, Path],
    label: str,
    when: str,
    warmup: float,
    duration: float,
) -> dict:
    """Measure one server of `targets` and log the result."""
    child, path, protocol = targets[label]
    result = measure(child, path, files[protocol], warmup, duration, logged=label == LOGGED)
    writer = result.get("log_writer_cpu_share")
    log(
        f"serving: {name} batch {batch} {when} {label}: "
        f"{result['rps']:.0f} req/s p50 {result['p50_ms']:.2f} ms "
        f"p99 {result['p99_ms']:.2f} ms errors {result['errors']} "
        f"client cpu {result['client_cpu_share']:.2f} "
        f"server cpu {result['server_cpu_ms']:.3f} ms/request"
        + ("" if writer is None else f" (log writer {writer:.1%} of it)")
    )
    return result


def measure(
    child: Child, path: str, body_file: Path, warmup: float, duration: float, logged: bool = False
) -> dict:
    """loadgen's figures plus the server's CPU milliseconds per answered
    request (warm-up included on both sides of the division): on a shared
    machine a steadier measure of a server's own cost than requests/s. For
    the logged server, also the share of that CPU its inference log's
    writer thread took (the server's own counter of it)."""
    port = child.port  # type: ignore[attr-defined]
    writer_before = log_writer_cpu_seconds(port) if logged else None
    before = session_cpu_seconds(child.process.pid)
    result = load(port, path, body_file, warmup, duration)
    spent = session_cpu_seconds(child.process.pid) - before
    answered = result["rps"] * (warmup + duration)
    result["server_cpu_ms"] = 1000 * spent / answered if answered else float("nan")
    if writer_before is not None and spent > 0:
        writer = log_writer_cpu_seconds(port) - writer_before
        result["log_writer_cpu_share"] = writer / spent
    return result


WRITER_CPU = "flywheel_serve_inference_log_writer_cpu_seconds_total"


def log_writer_cpu_seconds(port: int) -> float:
    """flywheel's count of its inference log writer's CPU seconds, summed over workers."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(WRITER_CPU + "{")
    ]
    if not values:
        raise RuntimeError(f"the logged server reports no {WRITER_CPU}")
    return sum(values)


def load(port: int, path: str, body_file: Path, warmup: float, duration: float) -> dict:
    argv = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--port",
        str(port),
        "--path",
        path,
        "--bodies",
        str(body_file),
        "--concurrency",
        str(CONCURRENCY),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
    ]
    out = subprocess.run(
        pinned(argv, CLIENT_CPUS),
        capture_output=True,
        text=True,
        timeout=warmup + duration + 120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def check_answers(targets: dict[str, tuple[Child, str, str]], files: dict[str, Path]) -> None:
    """Every server answers the first body with 200 and the same predictions."""
    answers = {}
    for label, (child, path, protocol) in targets.items():
        body = json.loads(files[protocol].read_text())[0].encode()
        status, raw = http_post(f"http://{HOST}:{child.port}{path}", body)  # type: ignore[attr-defined]
        if status != 200:
            raise RuntimeError(f"{label} answered {status}: {raw[:500]!r}")
        answers[label] = predictions(json.loads(raw))
    distinct = {json.dumps(a) for a in answers.values()}
    if len(distinct) != 1:
        raise RuntimeError(f"the servers disagree: {answers}")


def predictions(answer: Any) -> list:
    if isinstance(answer, dict) and "outputs" in answer:
        return [int(v) for v in answer["outputs"][0]["data"]]
    if isinstance(answer, dict) and "predictions" in answer:
        return [int(v) for v in answer["predictions"]]
    return [int(v) for v in answer]


# --- the benchmark --------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    names = ["logistic_regression"] if quick else ["random_forest", "logistic_regression"]
    batches = [1, 64]
    warmup, duration, rounds = (1.0, 2.0, 1) if quick else (2.0, 10.0, 2)
    log_pairs = 1 if quick else LOG_PAIRS
    mlserver_workers = 0
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    X, models = fit_models(names)
    children: list[Child] = []
    runs: list[dict[str, Any]] = []
    try:
        tracking_child, tracking = mlflow_server()
        children.append(tracking_child)
        uris = log_models(tracking, X, models)
        for name in names:
            log(f"serving: {name}: starting the servers")
            log_dir = WORK / f"inference-log-{name}"
            flywheel = start_flywheel(f"flywheel-{name}", uris[name], tracking, None)
            children.append(flywheel)
            logged = start_flywheel(f"flywheel-log-{name}", uris[name], tracking, log_dir.as_uri())
            children.append(logged)
            mlflow_serve = start_mlflow_serve(f"mlflow-{name}", uris[name], tracking)
            children.append(mlflow_serve)
            mlserver = start_mlserver(f"mlserver-{name}", models[name], mlserver_workers)
            children.append(mlserver)
            targets = {  # the two sides of the inference log's cost next to each other
                PLAIN: (flywheel, "/v2/models/model/infer", "v2"),
                LOGGED: (logged, "/v2/models/model/infer", "v2"),
                "flywheel /invocations": (flywheel, "/invocations", "invocations"),
                "mlflow /invocations": (mlflow_serve, "/invocations", "invocations"),
                "MLServer v2": (mlserver, "/v2/models/model/infer", "v2"),
            }
            for batch in batches:
                files = {}
                for protocol, texts in bodies(X, batch).items():
                    files[protocol] = WORK / f"bodies-{protocol}-{batch}.json"
                    files[protocol].write_text(json.dumps(texts))
                check_answers(targets, files)
                measured: dict[str, list[dict]] = {label: [] for label in targets}

                measure_one = functools.partial(
                    measure_target, name, batch, targets, files, warmup=warmup, duration=duration
                )

                pairs, writer_shares = [], []
                for round_ in range(rounds):
                    for label in in_turn(list(targets), round_):
                        measured[label].append(measure_one(label, f"round {round_ + 1}"))
                    pairs.append((measured[PLAIN][-1]["rps"], measured[LOGGED][-1]["rps"]))
                    writer_shares.append(measured[LOGGED][-1]["log_writer_cpu_share"])
                for pair in range(log_pairs):
                    got = {
                        label: measure_one(label, f"log pair {pair + 1}")
                        for label in in_turn([PLAIN, LOGGED], rounds + pair)
                    }
                    pairs.append((got[PLAIN]["rps"], got[LOGGED]["rps"]))
                    writer_shares.append(got[LOGGED]["log_writer_cpu_share"])
                for label, results in measured.items():
                    runs.append(summarize(name, batch, label, results))
                    if label == LOGGED:
                        runs[-1]["log_losses"] = [1 - logged / plain for plain, logged in pairs]
                        runs[-1]["log_writer_cpu_shares"] = writer_shares
            for child in (flywheel, logged, mlflow_serve, mlserver):
                stop(child)
            logged_files = list(log_dir.rglob("*.parquet"))
            log(f"serving: {name}: the inference log wrote {len(logged_files)} files")
    finally:
        for child in reversed(children):
            stop(child)
    return {
        "setup": {
            "models": names,
            "data_set": "sklearn.datasets.load_breast_cancer (569 rows, 30 numeric features)",
            "random_forest": "RandomForestClassifier(n_estimators=100, random_state=0)",
            "logistic_regression": "make_pipeline(StandardScaler(), LogisticRegression())",
            "server_cpus": SERVER_CPUS,
            "client_cpus": CLIENT_CPUS,
            "workers": 1,
            "mlserver_parallel_workers": mlserver_workers,
            "concurrency": CONCURRENCY,
            "warmup_seconds": warmup,
            "duration_seconds": duration,
            "rounds": rounds,
            "distinct_bodies": BODIES,
            "access_logs": "off for every server",
        },
        "versions": venv_versions(MLSERVER_VENV / "bin" / "python", MLSERVER_PACKAGES),
        "runs": runs,
        "goals": serving_goals(runs, names),
    }


PLAIN, LOGGED = "flywheel v2", "flywheel v2 + inference log"
# The inference log's cost is a few percent, about what one 10-second run
# moves by here, so besides the rounds it gets this many more runs of its two
# sides back to back; its figure is the median loss of all the pairs.
LOG_PAIRS = 3


def in_turn(labels: list[str], round_: int) -> list[str]:
    """The labels in their order, the first two swapped on odd rounds: of
    two sides measured back to back, neither is always the one that goes first."""
    if round_ % 2 and len(labels) > 1:
        return [labels[1], labels[0], *labels[2:]]
    return labels


MLSERVER_PACKAGES = ["mlserver", "mlserver-sklearn", "scikit-learn", "numpy", "uvicorn", "fastapi"]


def summarize(model: str, batch: int, label: str, results: list[dict]) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    return {
        "model": model,
        "batch": batch,
        "server": label,
        "rps": median("rps"),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "errors": sum(r["errors"] for r in results),
        "requests": sum(r["requests"] for r in results),
        "client_cpu_share": max(r["client_cpu_share"] for r in results),
        "server_cpu_ms_per_request": median("server_cpu_ms"),
        "rounds": [
            {
                k: r[k]
                for k in ("rps", "p50_ms", "p99_ms", "errors", "client_cpu_share", "server_cpu_ms")
            }
            for r in results
        ],
    }


def log_loss(logged: dict[str, Any] | None, plain_rps: float | None) -> float | None:
    """The median loss of the back-to-back pairs (no less than 0); from the
    rounds' medians when a run has no pairs (results before they were kept)."""
    if logged is None:
        return None
    if logged.get("log_losses"):
        return max(0.0, statistics.median(logged["log_losses"]))
    kept = ratio(logged["rps"], plain_rps)
    return None if kept is None else max(0.0, 1 - kept)


def writer_share(logged: dict[str, Any] | None) -> float | None:
    """The median of the logged runs' writer shares (None before they were kept)."""
    shares = (logged or {}).get("log_writer_cpu_shares")
    return statistics.median(shares) if shares else None


def serving_goals(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    def find(model: str, batch: int, server: str) -> dict[str, Any] | None:
        for run in runs:
            if (run["model"], run["batch"], run["server"]) == (model, batch, server):
                return run
        return None

    def figure(model: str, batch: int, server: str, key: str) -> float | None:
        run = find(model, batch, server)
        return None if run is None else run[key]

    goals = []
    for name in names:
        b = 1
        goals.append(
            goal(
                "serving",
                f"{name}, batch 1: req/s flywheel /invocations ÷ mlflow /invocations",
                ratio(
                    figure(name, b, "flywheel /invocations", "rps"),
                    figure(name, b, "mlflow /invocations", "rps"),
                ),
                3.0,
            )
        )
        goals.append(
            goal(
                "serving",
                f"{name}, batch 1: req/s flywheel v2 ÷ MLServer v2",
                ratio(
                    figure(name, b, "flywheel v2", "rps"),
                    figure(name, b, "MLServer v2", "rps"),
                ),
                1.5,
            )
        )
        for ours, theirs in (
            ("flywheel /invocations", "mlflow /invocations"),
            ("flywheel v2", "MLServer v2"),
        ):
            goals.append(
                goal(
                    "serving",
                    f"{name}, batch 1: p99 {ours} ÷ {theirs}",
                    ratio(figure(name, b, ours, "p99_ms"), figure(name, b, theirs, "p99_ms")),
                    1.0,
                    higher_is_better=False,
                )
            )
        for batch in (1, 64):
            goals.append(
                goal(
                    "serving",
                    f"{name}, batch {batch}: throughput lost to the inference log",
                    log_loss(find(name, batch, LOGGED), figure(name, batch, PLAIN, "rps")),
                    0.05,
                    higher_is_better=False,
                    unit="%",
                )
            )
            # The same cost, counted rather than inferred from two noisy
            # rates: what the writer thread took of the logged server's CPU
            # (a floor: a request's queue append is not in it).
            goals.append(
                goal(
                    "serving",
                    f"{name}, batch {batch}: the inference log writer's share of the server's CPU",
                    writer_share(find(name, batch, LOGGED)),
                    0.05,
                    higher_is_better=False,
                    unit="%",
                )
            )
    return goals
