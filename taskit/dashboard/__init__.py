"""The web dashboard (`pip install '/path/to/taskit[dashboard]'`; run it with `taskit dashboard`).

`create_app()` returns an ASGI app you can serve with uvicorn or mount in your own
Starlette / FastAPI app; see docs/dashboard.md.
"""

from __future__ import annotations

from ..exceptions import ConfigurationError

try:
    from .app import create_app
except ImportError as exc:  # pragma: no cover (the extra is installed in the tests)
    raise ConfigurationError(
        f"the dashboard needs taskit's 'dashboard' extra: pip install '/path/to/taskit[dashboard]' from your copy "
        f"of taskit, or its wheel's path with [dashboard] (taskit is not on PyPI; a 'taskit' there is another "
        f"project) ({exc})"
    ) from None

__all__ = ["create_app"]
