"""`flywheel serve`: the model server a ModelVersion's Deployment runs.

    command.py        the click command; configuration from the environment
    settings.py       the configuration, validated; start-up errors
    server.py         fetch the model, run the worker processes, SIGTERM
    app.py            the ASGI application of one worker
    protocols.py      Open Inference Protocol v2 and MLflow /invocations
    signature.py      request data checked against the model's signature
    model.py          fetching from MLflow; sklearn flavor or pyfunc
    metrics.py        Prometheus metrics, summed over the workers
    inference_log.py  sampled rows and predictions to Parquet, off the request path

Built for throughput, per request and per core:

- uvicorn with uvloop (a libuv event loop) and httptools (the node.js HTTP
  parser in C): the fastest pure-Python-hosted ASGI server stack available
  here. Starlette is skipped: a handful of fixed routes need no router, and
  its request/response objects and middleware only add per-request work.
- orjson for JSON both ways: several times faster than the standard
  library's json, and it writes numpy arrays without a `.tolist()`.
- Several worker processes (FLYWHEEL_WORKERS, default 2) on one socket:
  prediction is CPU-bound under the GIL, so processes, not threads, use the
  cores. Each worker predicts on its event loop: a thread hop per request
  would only add latency.
- The sklearn flavor is called directly, with a float matrix when the
  signature is numeric and the model agrees (checked at load time), so
  the request path needs no pandas; pyfunc (and models that select columns
  by name) get a DataFrame, as they require.
- The signature is checked once, by us, with numpy (MLflow's pyfunc would
  check it again with pandas on every call); bad input is a 400/422 naming
  the field, before the model sees it.
- Metrics are memory-mapped counters (prometheus_client's multiprocess
  mode), bound to their labels once; the inference log only samples and
  enqueues on the request path, a background thread writes the Parquet.
"""
