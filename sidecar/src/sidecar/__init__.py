"""Redrive sidecar: a reverse proxy in each backend pod that captures failed requests."""
