"""Getting the model: downloaded once by the server process, loaded by each worker.

`fetch` copies the model's artifacts from MLflow into a local directory
(retrying a few times with back-off while MLflow is unreachable), so
configuration errors stop the server before any worker starts and the
workers load from local disk without touching MLflow.

`load` prefers the sklearn flavor: the estimator itself, called directly,
skips pyfunc's per-call schema enforcement (we check the signature
ourselves, once, in signature.py). When the signature is all-numeric and the
estimator gives the same answers for a plain float matrix as for a
DataFrame (tried on the input example at load time), requests skip pandas
altogether; a model that selects columns by name (a ColumnTransformer) keeps
getting a DataFrame. Other flavors load as pyfunc and get a DataFrame.

A scikit-learn tree or forest (alone or as a Pipeline's final step) is
compiled into flat arrays (tree_ensemble.py), which answer one row ~70x
faster than scikit-learn's tree-by-tree predict, and a linear model after
standard scaling is answered with numpy alone (linear_model.py), ~25x
faster than the pipeline's predict for one row; both give scikit-learn's
answers to the bit, and the log says whether a compiled model or
scikit-learn's predict serves.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .settings import ServeError, ServeSettings
from .signature import ANY, Batch, Column

log = logging.getLogger("flywheel.serve")

FETCH_ATTEMPTS = 4
FETCH_BACKOFF_SECONDS = 2.0  # then 4, 8
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
CLASS_TYPES = frozenset({"string", "long", "integer", "boolean"})
PRIMARY = "predict"  # the output's name when the model returns one array


# --- fetching --------------------------------------------------------------


def fetch(settings: ServeSettings, destination: str, sleep: Callable = time.sleep) -> str:
    """The model's local directory, or a ServeError naming the variable."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = settings.model_uri
    remote = uri.startswith(("models:", "runs:", "mlflow-artifacts:"))
    if remote and not settings.tracking_uri:
        raise ServeError(
            "InvalidSpec", f"MLFLOW_TRACKING_URI is not set; FLYWHEEL_MODEL_URI {uri} needs it"
        )
    if settings.tracking_uri:
        mlflow.set_tracking_uri(settings.tracking_uri)
        # Else models:/ would look in a local SQLite registry (and create one).
        mlflow.set_registry_uri(settings.tracking_uri)
    where = f" at {settings.tracking_uri}" if settings.tracking_uri else ""
    for attempt in range(FETCH_ATTEMPTS):
        try:
            return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=destination)
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND_CODES:
                raise ServeError(
                    "ModelNotFound", f"FLYWHEEL_MODEL_URI {uri}: not found{where}: {exc.message}"
                ) from exc
            problem = f"{exc.message}"
        except OSError as exc:
            problem = str(exc)
        if attempt == FETCH_ATTEMPTS - 1:
            raise ServeError(
                "TrackingUnavailable",
                f"MLFLOW_TRACKING_URI {settings.tracking_uri}: cannot fetch {uri} after "
                f"{FETCH_ATTEMPTS} attempts: {first_line(problem)}",
            )
        pause = FETCH_BACKOFF_SECONDS * 2**attempt
        log.warning("cannot fetch %s%s (%s); retrying in %.0f s", uri, where, problem, pause)
        sleep(pause)
    raise AssertionError("unreachable")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else text


# --- loading ---------------------------------------------------------------


@dataclass
class ServedModel:
    predict: Callable[[Batch], dict[str, np.ndarray]]
    schema: list[Column] | None
    classifier: bool
    flavor: str  # sklearn or pyfunc
    uses_frame: bool  # pandas DataFrames (else a float matrix) go to the model
    outputs: list[Column]


def signature_columns(signature: Any) -> tuple[list[Column] | None, list[Column]]:
    """Inputs and outputs of an MLflow signature as Columns (None: unchecked)."""
    if signature is None:
        return None, []
    return _columns(signature.inputs), _columns(signature.outputs) or _tensor(signature.outputs)


def _tensor(schema: Any) -> list[Column]:
    """One output tensor (what infer_signature makes of a numpy array) as a column."""
    if schema is None or not schema.is_tensor_spec() or len(schema.inputs) != 1:
        return []
    kind = schema.inputs[0].type.kind
    types = {"f": "double", "i": "long", "u": "long", "b": "boolean", "U": "string", "O": "string"}
    return [Column(PRIMARY, types.get(kind, ANY))]


def _columns(schema: Any) -> list[Column] | None:
    if schema is None or schema.is_tensor_spec():
        return None  # tensor signatures: not checked column by column
    columns = []
    for index, spec in enumerate(schema.inputs):
        kind = getattr(spec.type, "name", None)
        columns.append(Column(spec.name or str(index), kind or ANY, spec.required))
    return columns


def load(path: str) -> ServedModel:
    """Load the downloaded model (a directory with an MLmodel file)."""
    from mlflow.models import Model

    try:
        meta = Model.load(path)
    except Exception as exc:
        raise ServeError(
            "ModelUnloadable", f"FLYWHEEL_MODEL_URI: no MLflow model there: {exc}"
        ) from exc
    schema, outputs = signature_columns(meta.signature)
    example = _input_example(meta, path)
    pyfunc_conf = meta.flavors.get("python_function", {})
    try:
        if "sklearn" in meta.flavors and pyfunc_conf.get("predict_fn", "predict") == "predict":
            return _load_sklearn(path, schema, outputs, example)
        return _load_pyfunc(path, schema, outputs, example)
    except ServeError:
        raise
    except Exception as exc:
        raise ServeError(
            "ModelUnloadable", f"FLYWHEEL_MODEL_URI: cannot load the model: {exc}"
        ) from exc


def _input_example(meta: Any, path: str) -> Any:
    try:
        return meta.load_input_example(path)
    except Exception:  # only used to choose the fast path
        return None


def _load_sklearn(path, schema, outputs, example) -> ServedModel:
    import mlflow.sklearn
    from sklearn.base import is_classifier

    # Fitted on a DataFrame, given a matrix: the same numbers, one warning a call.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    estimator = mlflow.sklearn.load_model(path)
    order = _feature_order(estimator, schema)
    matrix_ok = order is not None and _same_answers(estimator, schema, order, example)
    probe = _probe_batch(schema, order, example)
    model_predict = _fastest_predict(
        estimator, None if probe is None else _ordered(probe, order) if matrix_ok else frame(probe)
    )

    signature_order = schema is not None and order == [c.name for c in schema]

    def by_matrix(batch: Batch) -> dict[str, np.ndarray]:
        if signature_order and batch.matrix is not None:  # the request's rows as sent
            rows = batch.matrix.astype(np.float64, copy=False)
        else:
            rows = _ordered(batch, order)
        return {PRIMARY: np.asarray(model_predict(rows))}

    def by_frame(batch: Batch) -> dict[str, np.ndarray]:
        return outputs_of(model_predict(frame(batch)))

    log.info("sklearn flavor, %s input", "matrix" if matrix_ok else "DataFrame")
    return ServedModel(
        by_matrix if matrix_ok else by_frame,
        schema,
        bool(is_classifier(estimator)),
        "sklearn",
        not matrix_ok,
        outputs,
    )


def _feature_order(estimator: Any, schema: list[Column] | None) -> list[str] | None:
    """The column order the estimator was fitted in, if a plain matrix may do."""
    if not schema or any(c.type not in ("double", "float", "long", "integer") for c in schema):
        return None
    fitted = getattr(estimator, "feature_names_in_", None)
    names = [c.name for c in schema]
    if fitted is not None and sorted(map(str, fitted)) == sorted(names):
        return [str(n) for n in fitted]
    return names if fitted is None else None


def _ordered(batch: Batch, order: list[str]) -> np.ndarray:
    return np.column_stack([batch.columns[n].astype(np.float64, copy=False) for n in order])


def _probe_batch(schema: list[Column] | None, order: list[str] | None, example: Any) -> Any:
    """The input example as a Batch, else two rows of ones; None without a usable schema."""
    import pandas as pd

    from .signature import from_columns

    if not schema or order is None:
        return None
    if isinstance(example, pd.DataFrame) and set(map(str, example.columns)) >= set(order):
        return from_columns(schema, {str(c): example[c].to_numpy() for c in example.columns})
    return from_columns(schema, {n: np.ones(2) for n in order})


def _fastest_predict(estimator: Any, probe: Any) -> Callable[[Any], Any]:
    """A compiled model (compiled.py) when it reproduces the estimator, else
    scikit-learn's predict; the log says which serves."""
    from .compiled import NotCompiled, compile_model

    try:
        compiled = compile_model(estimator)
    except NotCompiled as exc:
        log.info("scikit-learn's predict serves (%s)", exc)
        return estimator.predict
    if probe is not None:  # a guard; the proof is tests/unit/test_serving_compiled_*.py
        try:
            same = np.array_equal(compiled.predict(probe), estimator.predict(probe))
        except Exception as exc:
            same, why = False, f"{type(exc).__name__}: {exc}"
        else:
            why = "different predictions on the input example"
        if not same:
            log.warning(
                "scikit-learn's predict serves: the compiled model failed the check (%s)", why
            )
            return estimator.predict
    log.info("%s", compiled.serves)
    return compiled.predict


def _same_answers(estimator: Any, schema: list[Column], order: list[str], example: Any) -> bool:
    batch = _probe_batch(schema, order, example)
    try:
        by_frame = np.asarray(estimator.predict(frame(batch)))
        by_matrix = np.asarray(estimator.predict(_ordered(batch, order)))
    except Exception as exc:
        log.info("the model needs a DataFrame: %s", exc)
        return False
    if by_frame.dtype.kind == "f":
        return by_frame.shape == by_matrix.shape and bool(
            np.allclose(by_frame, by_matrix, rtol=0, atol=0, equal_nan=True)
        )
    return bool(np.array_equal(by_frame, by_matrix))


def _load_pyfunc(path, schema, outputs, example) -> ServedModel:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(path)

    def predict(batch: Batch) -> dict[str, np.ndarray]:
        return outputs_of(model.predict(frame(batch)))

    if outputs:
        classifier = outputs[0].type in CLASS_TYPES
    else:  # no output schema: what the example's predictions look like
        classifier = True
        try:
            sample = next(iter(outputs_of(model.predict(example)).values()))
            classifier = sample.dtype.kind != "f"
        except Exception:
            pass
    loader = model.metadata.flavors.get("python_function", {}).get("loader_module")
    log.info("pyfunc flavor (%s)", loader)
    return ServedModel(predict, schema, classifier, "pyfunc", True, outputs)


def frame(batch: Batch) -> Any:
    import pandas as pd

    return pd.DataFrame(batch.columns, copy=False)


def outputs_of(predictions: Any) -> dict[str, np.ndarray]:
    """The model's answer as named arrays, one entry per output column."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        if predictions.shape[1] == 1:
            return {PRIMARY: predictions.iloc[:, 0].to_numpy()}
        return {str(c): predictions[c].to_numpy() for c in predictions.columns}
    if isinstance(predictions, pd.Series):
        return {PRIMARY: predictions.to_numpy()}
    if isinstance(predictions, dict):
        return {str(k): np.asarray(v) for k, v in predictions.items()}
    return {PRIMARY: np.asarray(predictions)}
