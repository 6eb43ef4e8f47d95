"""The part of `flywheel train` that needs pandas and scikit-learn: read a
Dataset version (checking it is the one pinned), split, fit and score. No MLflow.

The whole dataset is loaded into memory: scikit-learn estimators fit on
in-memory arrays, so the training pod's memory limit must hold the data (a few
times its CSV size while parsing and encoding). `train` imports this module
only when it runs, so the `flywheel` command line does not load these libraries.
"""

from __future__ import annotations

import gzip
import importlib
import io
import logging
import math
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..api import trainingrun as api_trainingrun
from ..api.trainingrun import BuiltinTrainer
from .errors import WorkloadError
from .reading import (
    READ_ERRORS,
    HashingReader,
    ObjectDigest,
    dataset_version,
    unreadable,
)
from .scan import list_objects
from .storage import CHUNK_BYTES, Readable, Store, StoredObject, spool

log = logging.getLogger("flywheel.train")

Task = Literal["classification", "regression"]

CLASSIFICATION_METRICS = frozenset(api_trainingrun.CLASSIFICATION_METRICS)
REGRESSION_METRICS = frozenset(api_trainingrun.REGRESSION_METRICS)
PROBABILITY_METRICS = frozenset({"roc_auc", "log_loss"})
# A text column becomes at most this many indicator columns; rarer values
# share one "infrequent" column, so an id-like column cannot blow up memory.
MAX_CATEGORIES = 50


# --- reading ---------------------------------------------------------------


@dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    version: str  # recomputed from the bytes that were parsed
    objects: int
    bytes: int


def load_dataset(store: Store, uri: str, data_format: str) -> LoadedData:
    """Every object of the format under `uri`, in key order, as one DataFrame.

    The version is hashed from the very bytes pandas parses, exactly as the
    snapshot hashes them, so it can be compared with a pinned version."""
    objects = list_objects(store, uri, data_format)
    frames: list[pd.DataFrame] = []
    digests: list[ObjectDigest] = []
    for obj in objects:
        frame, digest = read_object(store, obj, data_format)
        log.info("read %s: %d rows, %d bytes", obj.key, len(frame), digest.size)
        frames.append(frame)
        digests.append(digest)
    # Objects without a column get missing values in it, as in the snapshot.
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True, sort=False)
    return LoadedData(frame, dataset_version(digests), len(objects), sum(d.size for d in digests))


def check_version(pinned: str, actual: str, uri: str) -> None:
    """A pinned version must never silently train on other data. A prefix of
    12+ characters pins as well as the whole hash (DatasetRef allows both)."""
    if not actual.startswith(pinned):
        raise WorkloadError(
            "DatasetChanged",
            f"the data under {uri} now has version {actual[:16]}…, not {pinned[:16]}… that "
            "this run pins: it changed after the snapshot. Take a new snapshot and train on "
            "that version, or restore the data.",
        )


def read_object(
    store: Store, obj: StoredObject, data_format: str
) -> tuple[pd.DataFrame, ObjectDigest]:
    with ExitStack() as stack:
        stream = store.open(obj)
        stack.callback(stream.close)
        hasher = HashingReader(stream)
        try:
            if data_format == "csv":
                frame = _read_csv(stack, hasher, obj)
                hasher.drain()  # the hash covers every byte, as the snapshot's does
                return frame, hasher.digest(obj.key)
            # Parquet needs random access: spool it (hashing on the way) and
            # parse that copy, so what is parsed is what was hashed, locally too.
            path = spool(hasher)
            stack.callback(path.unlink, missing_ok=True)
            return pd.read_parquet(path), hasher.digest(obj.key)
        except READ_ERRORS as exc:
            raise unreadable(obj, data_format, exc) from exc


def _read_csv(stack: ExitStack, hasher: HashingReader, obj: StoredObject) -> pd.DataFrame:
    text: Readable = hasher
    if obj.key.lower().endswith(".gz"):
        text = stack.enter_context(gzip.GzipFile(fileobj=hasher, mode="rb"))
    # low_memory=False: types are inferred from whole columns, not per chunk.
    # Empty cells and NA/NULL/NaN are missing values, as in the snapshot.
    return pd.read_csv(io.BufferedReader(_RawStream(text), CHUNK_BYTES), low_memory=False)


class _RawStream(io.RawIOBase):
    """pandas wants a file object; the hashing reader has only `read`."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# --- the estimator ---------------------------------------------------------


def import_estimator(path: str) -> type:
    """The estimator class at `path`; only classes with fit and predict."""
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkloadError(
            "UnknownEstimator",
            f"spec.trainer.estimator {path!r}: cannot import {module_name!r} ({exc}); "
            "the image has scikit-learn, e.g. sklearn.ensemble.RandomForestClassifier",
        ) from exc
    found = getattr(module, name, None)
    if found is None:
        raise WorkloadError(
            "UnknownEstimator", f"spec.trainer.estimator {path!r}: {module_name} has no {name!r}"
        )
    if not isinstance(found, type) or not all(
        callable(getattr(found, method, None)) for method in ("fit", "predict")
    ):
        raise WorkloadError(
            "UnknownEstimator",
            f"spec.trainer.estimator {path!r} is not a scikit-learn estimator class "
            "(a class with fit and predict)",
        )
    return found


@dataclass(frozen=True)
class Estimator:
    model: Any  # the unfitted estimator
    name: str  # the class name, for messages
    task: Task
    hyperparameters: dict[str, Any]  # the user's, plus random_state when we set it


def make_estimator(trainer: BuiltinTrainer) -> Estimator:
    """Import and construct the estimator; `random_state` is the seed unless set."""
    from sklearn.base import is_classifier, is_regressor

    cls = import_estimator(trainer.estimator)
    name = cls.__name__
    given = dict(trainer.hyperparameters or {})
    try:
        model = cls(**given)
    except (TypeError, ValueError) as exc:
        raise invalid_hyperparameters(name, exc) from exc
    if "random_state" not in given and "random_state" in _parameters(model):
        model.set_params(random_state=trainer.seed)
        given["random_state"] = trainer.seed
    if is_classifier(model):
        task = "classification"
    elif is_regressor(model):
        task = "regression"
    else:
        raise WorkloadError(
            "UnknownEstimator",
            f"spec.trainer.estimator {trainer.estimator!r} is neither a classifier nor a "
            "regressor; the built-in trainer fits only those",
        )
    return Estimator(model, name, task, given)


def _parameters(model: Any) -> dict[str, Any]:
    try:
        return model.get_params(deep=False)
    except Exception:  # not quite scikit-learn compatible: no settable params then
        return {}


def invalid_hyperparameters(name: str, exc: BaseException) -> WorkloadError:
    return WorkloadError("InvalidHyperparameters", f"spec.trainer.hyperparameters of {name}: {exc}")


def check_task_metrics(metrics: Iterable[str], estimator: Estimator) -> None:
    """Metrics that cannot apply whatever the data: before reading any."""
    for metric in metrics:
        if estimator.task == "regression" and metric in CLASSIFICATION_METRICS:
            raise WorkloadError(
                "MetricNotApplicable",
                f"spec.trainer.metrics: {metric} measures classifiers and {estimator.name} is a "
                "regressor; use rmse, mae or r2",
            )
        if metric in PROBABILITY_METRICS and not hasattr(estimator.model, "predict_proba"):
            raise WorkloadError(
                "MetricNotApplicable",
                f"spec.trainer.metrics: {metric} needs predicted probabilities and "
                f"{estimator.name} gives none (no predict_proba) with these hyperparameters; "
                "SVC and NuSVC give them with probability: true",
            )


# --- the data --------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    features: list[str]
    categorical: list[str]  # one-hot encoded inside the model
    inputs: pd.DataFrame  # the raw feature columns, as the logged model takes them
    labels: pd.Series
    unlabelled: int  # rows dropped because the target was missing


def prepare(frame: pd.DataFrame, trainer: BuiltinTrainer, target: str, task: Task) -> Prepared:
    """Pick and tidy the feature columns; drop rows without a label."""
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    if target not in columns:
        raise WorkloadError(
            "InvalidSpec",
            f"target column {target!r} is not in the data (columns: {_some(columns)}); "
            "set spec.trainer.targetColumn or the Dataset's spec.schema.target",
        )
    features = _features(frame, trainer.features, target)
    labelled = frame[target].notna()
    unlabelled = int((~labelled).sum())
    if unlabelled:
        log.warning("dropped %d rows whose target %r is missing", unlabelled, target)
    frame = frame.loc[labelled]
    if frame.empty:
        raise WorkloadError("InvalidData", f"no rows with a value in the target column {target!r}")
    inputs = pd.DataFrame({name: _tidy(frame[name]) for name in features}, index=frame.index)
    inputs = inputs.reset_index(drop=True)
    labels = _labels(frame[target].reset_index(drop=True), target, task)
    categorical = [name for name in features if not _numeric(inputs[name])]
    return Prepared(features, categorical, inputs, labels, unlabelled)


def _features(frame: pd.DataFrame, chosen: list[str] | None, target: str) -> list[str]:
    if chosen is None:
        # Timestamps are not features as they are (one-hot encoding them would
        # be wrong); derive numbers from them in the data if they matter.
        skipped = [
            c
            for c in frame.columns
            if c != target and pd.api.types.is_datetime64_any_dtype(frame[c])
        ]
        if skipped:
            log.warning("not using the timestamp columns %s as features", _some(skipped))
        features = [c for c in frame.columns if c != target and c not in skipped]
        if not features:
            raise WorkloadError("InvalidData", f"the data has no column to learn {target!r} from")
        return features
    missing = [c for c in chosen if c not in frame.columns]
    if missing:
        raise WorkloadError(
            "InvalidSpec",
            f"spec.trainer.features: {_some(missing)} not in the data "
            f"(columns: {_some(list(frame.columns))})",
        )
    if target in chosen:
        raise WorkloadError(
            "InvalidSpec", f"spec.trainer.features lists the target column {target!r}"
        )
    duplicates = sorted({c for c in chosen if chosen.count(c) > 1})
    if duplicates:
        raise WorkloadError("InvalidSpec", f"spec.trainer.features repeats {_some(duplicates)}")
    timestamps = [c for c in chosen if pd.api.types.is_datetime64_any_dtype(frame[c])]
    if timestamps:
        raise WorkloadError(
            "InvalidData",
            f"spec.trainer.features: {_some(timestamps)} holds timestamps, which the built-in "
            "trainer does not encode; derive numeric columns from them in the data",
        )
    return list(chosen)


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _tidy(column: pd.Series) -> pd.Series:
    """Numbers as float64 (an integer column cannot hold a missing value at
    serving time, MLflow warns); other values as text, missing as NaN, so the
    encoder never sees a mix of types (e.g. '1' from one file, 1 from another)."""
    if _numeric(column):
        return column.astype("float64")
    if pd.api.types.is_bool_dtype(column) and not column.isna().any():
        return column.astype(bool)
    return column.astype(str).where(column.notna(), np.nan).astype(object)


def _labels(labels: pd.Series, target: str, task: Task) -> pd.Series:
    from sklearn.utils.multiclass import type_of_target

    if task == "regression":
        if not _numeric(labels):
            raise WorkloadError(
                "InvalidData",
                f"the target {target!r} holds {_example(labels)}, not numbers: a regressor "
                "needs a numeric target; use a classifier",
            )
        return labels.astype("float64")
    if labels.dtype == object:  # mixed types (e.g. from several files) sort only as text
        labels = labels.astype(str)
    elif pd.api.types.is_float_dtype(labels) and (labels == labels.round()).all():
        labels = labels.astype("int64")  # 0/1 read as 0.0/1.0 because some were missing
    kind = type_of_target(labels)
    if kind == "continuous":
        raise WorkloadError(
            "InvalidData",
            f"the target {target!r} holds continuous numbers such as {_example(labels)}: "
            "a classifier needs classes; use a regressor",
        )
    if labels.nunique() < 2:
        raise WorkloadError(
            "InvalidData", f"the target {target!r} has one class only ({_example(labels)})"
        )
    return labels


def _example(values: pd.Series) -> str:
    if not len(values):
        return "nothing"
    first = values.iloc[0]
    return repr(first.item() if isinstance(first, np.generic) else first)


def _some(names: list[str], shown: int = 10) -> str:
    listed = ", ".join(repr(n) for n in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_label_metrics(metrics: Iterable[str], prepared: Prepared, target: str) -> None:
    """Regression metrics on a classifier need numeric labels."""
    for metric in metrics:
        if metric in REGRESSION_METRICS and not _numeric(prepared.labels):
            raise WorkloadError(
                "MetricNotApplicable",
                f"spec.trainer.metrics: {metric} needs numeric labels and the target {target!r} "
                f"holds {_example(prepared.labels)}",
            )


# --- fitting and scoring ---------------------------------------------------


@dataclass
class Trained:
    model: Any  # the fitted Pipeline: raw feature columns in, predictions out
    task: Task
    metrics: dict[str, float]
    rows_train: int
    rows_validation: int
    stratified: bool
    validation_predictions: Any = field(repr=False)


def build_pipeline(estimator: Any, categorical: list[str]) -> Any:
    """One-hot encoding of the text columns and the estimator, as one model,
    so the logged model takes the data's own columns."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    encoder = OneHotEncoder(
        handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES, sparse_output=False
    )
    encode = ColumnTransformer(
        [("onehot", encoder, categorical)],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    return Pipeline([("encode", encode), ("model", estimator)])


def split(
    prepared: Prepared, fraction: float, seed: int, task: Task
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series, bool]:
    """Train/validation split; stratified by class for a classifier when every
    class has enough rows for both sides."""
    from sklearn.model_selection import train_test_split

    x, y = prepared.inputs, prepared.labels
    if task == "classification":
        try:
            parts = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
            return (*parts, True)
        except ValueError as exc:
            log.warning("splitting at random, not by class: %s", exc)
    try:
        parts = train_test_split(x, y, test_size=fraction, random_state=seed)
    except ValueError as exc:
        raise WorkloadError(
            "InvalidData", f"cannot split {len(y)} rows by validationSplit {fraction}: {exc}"
        ) from exc
    return (*parts, False)


def train(prepared: Prepared, estimator: Estimator, trainer: BuiltinTrainer) -> Trained:
    """Split, fit and compute every requested metric on the validation split."""
    x_train, x_val, y_train, y_val, stratified = split(
        prepared, trainer.validation_split, trainer.seed, estimator.task
    )
    if estimator.task == "classification" and y_train.nunique() < 2:
        raise WorkloadError(
            "InvalidData", f"the training split has one class only ({len(y_train)} rows)"
        )
    model = build_pipeline(estimator.model, prepared.categorical)
    log.info(
        "fitting %s on %d rows, %d features", estimator.name, len(x_train), len(prepared.features)
    )
    try:
        model.fit(x_train, y_train)
    except (TypeError, ValueError) as exc:
        raise fit_error(exc, estimator, x_train) from exc
    predictions = model.predict(x_val)
    metrics = {
        m: score(m, model, x_val, y_val, predictions) for m in dict.fromkeys(trainer.metrics)
    }
    return Trained(
        model=model,
        task=estimator.task,
        metrics=metrics,
        rows_train=len(x_train),
        rows_validation=len(x_val),
        stratified=stratified,
        validation_predictions=predictions,
    )


def fit_error(exc: BaseException, estimator: Estimator, inputs: pd.DataFrame) -> WorkloadError:
    """A parameter error, or data the estimator cannot take (missing values)."""
    from sklearn.utils._param_validation import InvalidParameterError

    if not isinstance(exc, InvalidParameterError):
        numbers = inputs.select_dtypes("number")
        holed = [c for c in numbers if not np.isfinite(numbers[c].to_numpy()).all()]
        text = str(exc).lower()
        if holed and ("nan" in text or "infinity" in text):
            more = "HistGradientBoostingClassifier or ...Regressor, for example"
            return WorkloadError(
                "InvalidData",
                f"{estimator.name} does not accept missing or infinite values, and "
                f"the features {_some(holed)} hold some: fill them in the data, or use an "
                f"estimator that handles them ({more})",
            )
    return invalid_hyperparameters(estimator.name, exc)


def score(
    metric: str, model: Any, inputs: pd.DataFrame, labels: pd.Series, predicted: Any
) -> float:
    """One metric on the validation split.

    For classifiers, f1, precision and recall are those of the positive class
    when there are two classes (the last in sorted order: 1, True, 'yes') and
    their support-weighted mean over classes otherwise; roc_auc takes the
    positive class's probability, or is one-vs-rest macro-averaged for more
    than two classes."""
    try:
        value = float(_score(metric, model, inputs, labels, predicted))
    except ValueError as exc:
        raise WorkloadError(
            "MetricNotApplicable", f"{metric} cannot be computed on the validation split: {exc}"
        ) from exc
    if not math.isfinite(value):
        raise WorkloadError(
            "MetricNotApplicable",
            f"{metric} is undefined on this validation split ({len(labels)} rows); "
            "raise validationSplit or add data",
        )
    return value


def _score(
    metric: str, model: Any, inputs: pd.DataFrame, labels: pd.Series, predicted: Any
) -> float:
    from sklearn import metrics as m

    if metric == "rmse":
        return m.root_mean_squared_error(labels, predicted)
    if metric == "mae":
        return m.mean_absolute_error(labels, predicted)
    if metric == "r2":
        return m.r2_score(labels, predicted)
    if metric == "accuracy":
        return m.accuracy_score(labels, predicted)
    if metric == "balanced_accuracy":
        return m.balanced_accuracy_score(labels, predicted)
    classes = list(model.classes_)
    if metric in PROBABILITY_METRICS:
        probabilities = model.predict_proba(inputs)
        if metric == "log_loss":
            return m.log_loss(labels, probabilities, labels=classes)
        if len(classes) == 2:
            return m.roc_auc_score(labels == classes[1], probabilities[:, 1])
        return m.roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes)
    if metric == "f1_macro":
        return m.f1_score(labels, predicted, average="macro", zero_division=0)
    averaging = (
        {"average": "binary", "pos_label": classes[1]}
        if len(classes) == 2
        else {"average": "weighted"}
    )
    by_name = {"f1": m.f1_score, "precision": m.precision_score, "recall": m.recall_score}
    return by_name[metric](labels, predicted, zero_division=0, **averaging)
