"""The HTTP API. Nothing imports this package."""

from aiaas.api.app import create_app

__all__ = ["create_app"]
