"""The worker: claims jobs, runs them, records outcomes, recovers what dead workers held."""

from .worker import Worker

__all__ = ["Worker"]
