"""Apps: services a user calls by name (`POST /serving/process`, `llmos app call`).

The built-ins — `customer_service`, `recommendation_system` (alias
`recommendation`), `summarize` — register like any third-party app, through the
entry point group `llmos.apps` in pyproject.toml. To write one: subclass `App`
(below), and declare it in your package's metadata:

    [project.entry-points."llmos.apps"]
    my_app = "my_package.module:MyApp"
"""

from __future__ import annotations

from llmos.api.appkit import App, AppContext, DataError, DataFile

__all__ = ["App", "AppContext", "DataError", "DataFile"]
