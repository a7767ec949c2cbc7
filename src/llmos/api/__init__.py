"""The HTTP API: FastAPI routes that turn HTTP into syscalls and back."""

from llmos.api.app import create_app

__all__ = ["create_app"]
