"""Redrive: capture the requests a service fails, park them in Kafka, redrive them later.

This package is the contract between the sidecar and the retry worker (the record
envelope) plus the plumbing both need: settings, logging, the Kafka boundary, the admin
server and the operator CLI. Services import it; they never import each other.
"""

__version__ = "0.1.0"
