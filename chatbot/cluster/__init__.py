"""`describe --ray` and `index --ray`: the same jobs as on one machine, run as Ray Data pipelines.

Ray is an optional extra (`pip install 'blip2-chat[cluster]'`) and is imported only inside functions.
The pipelines read and decode files on the cluster and run the model in actors that each load it once
(through our own loader, so precision and 8-bit/4-bit apply); the results come back to the driver in
input order, and the driver's existing code decides and writes every row (docs/scale-out.md).
"""
