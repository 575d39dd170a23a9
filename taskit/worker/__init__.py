"""The worker: claims jobs, runs them, records outcomes, recovers what dead workers held."""

from .hooks import on_worker_start, on_worker_stop
from .worker import Worker, default_worker_name

__all__ = ["Worker", "default_worker_name", "on_worker_start", "on_worker_stop"]
