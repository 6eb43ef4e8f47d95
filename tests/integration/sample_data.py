"""Data the samples refer to, made from what scikit-learn ships (no download)."""

from __future__ import annotations

import io

from sklearn.datasets import load_iris

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
# manifests/samples/dataset.yaml reads s3://flywheel-data/iris/.
SAMPLE_BUCKET, SAMPLE_KEY = "flywheel-data", "iris/iris.csv"


def iris_csv() -> bytes:
    iris = load_iris(as_frame=True)
    frame = iris.frame.copy()
    frame.columns = IRIS_COLUMNS[:4] + ["target"]
    frame["species"] = frame.pop("target").map(dict(enumerate(iris.target_names)))
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def upload_sample_data(store) -> None:
    store.make_bucket(SAMPLE_BUCKET)
    store.client().put_object(Bucket=SAMPLE_BUCKET, Key=SAMPLE_KEY, Body=iris_csv())
