"""The web dashboard (`pip install 'taskit[dashboard]'`; run it with `taskit dashboard`).

`create_app()` returns an ASGI app you can serve with uvicorn or mount in your own
Starlette / FastAPI app; see docs/dashboard.md.
"""

from __future__ import annotations

from ..exceptions import ConfigurationError

try:
    from .app import create_app
except ImportError as exc:  # pragma: no cover (the extra is installed in the tests)
    raise ConfigurationError(
        f"the dashboard needs the 'dashboard' extra: pip install 'taskit[dashboard]' ({exc})"
    ) from None

__all__ = ["create_app"]
