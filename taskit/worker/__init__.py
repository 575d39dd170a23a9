"""The worker: claims jobs, runs them, records outcomes, recovers what dead workers held."""

from .worker import Worker, default_worker_name

__all__ = ["Worker", "default_worker_name"]
