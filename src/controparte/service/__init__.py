"""Use-cases shared by every front end (CLI, DNS, HTTP)."""

from controparte.service.registry import Registry

__all__ = ["Registry"]
