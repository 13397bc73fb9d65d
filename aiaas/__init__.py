"""aiaas — self-hosted AI model as a service."""

__version__ = "0.1.0"
