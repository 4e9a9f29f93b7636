"""Connectivity plans: the feature catalog (data), the planner and firewall rules (pure)."""
