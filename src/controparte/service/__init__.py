"""Use-cases shared by every front end (CLI, DNS, HTTP)."""

from controparte.service.registry import ImportError_, Registry

__all__ = ["ImportError_", "Registry"]
