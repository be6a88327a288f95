"""Canary and shadow releases of a model version, gated on SLA tiers and output agreement (issue 14)."""
