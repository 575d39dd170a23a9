"""A periodic task for fault tests: `taskit worker fault_tasks periodic_tasks -q ticks`."""

from __future__ import annotations

import fault_tasks

from taskit.periodic import periodic

periodic(fault_tasks.work, "* * * * *", args=[0], name="every-minute", queue="ticks")
