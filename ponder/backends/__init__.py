"""Engines behind one :class:`~ponder.backends.base.Backend` interface."""

from ponder.backends.base import Backend, BackendInfo, ChatPiece

__all__ = ["Backend", "BackendInfo", "ChatPiece"]
