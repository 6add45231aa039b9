"""The task ids of ``recsys_daily``, in the order the demo prints them (shared by the demo-output and the
Celery-stack tests: one list to change when the DAG gains a task)."""

DAILY_TASKS = [
    "ingest.land",
    "ingest.collect",
    "ingest.validate",
    "ingest.anonymize",
    "model.features",
    "model.train_due",
    "model.train",
    "model.train_retrieval",
    "model.evaluate",
    "model.register",
    "serve.recommend",
    "serve.publish",
]
