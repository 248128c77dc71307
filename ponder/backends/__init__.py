"""Engines behind one :class:`~ponder.backends.base.Backend` interface."""

from ponder.backends.base import Backend, BackendInfo, SampleSpec

__all__ = ["Backend", "BackendInfo", "SampleSpec"]
