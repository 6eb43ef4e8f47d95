"""The few places that talk to the outside: Kubernetes, MLflow, object storage."""
