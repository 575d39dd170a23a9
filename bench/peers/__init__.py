"""One module per library: its no-op task, how to enqueue it, and how to start its workers.

Each module is both the task module its workers import and, run with `python -m`, the
driver process that measures the library (see `driver.py`).
"""
