"""Contracts and plumbing every wva service uses: messages, subjects, streams, config, NATS and
Kubernetes clients, lifecycle and observability. Never imports ``services``."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wva")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
