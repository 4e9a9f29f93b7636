"""Use-cases shared by every front end (CLI, DNS, HTTP)."""

from controparte.service.registry import Registry, reserved_labels

__all__ = ["Registry", "reserved_labels"]
