"""Code that runs inside the pods the operator creates, one `flywheel <verb>` each.

Workloads get no Kubernetes API rights: they read their input from the
environment, write large outputs to the artifact store and report a small JSON
result through the container's termination message.
"""
