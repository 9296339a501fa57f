"""Redrive injector: a mutating admission webhook that adds the Redrive sidecar to pods."""
