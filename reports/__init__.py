"""Reconciliation result and its renderers (HTML, CSV, JSON, evidence manifest)."""
