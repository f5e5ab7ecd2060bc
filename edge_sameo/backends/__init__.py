"""Runtimes behind one interface (:class:`~edge_sameo.backends.base.Backend`)."""

from edge_sameo.backends.base import Backend, DecoderOutput

__all__ = ["Backend", "DecoderOutput"]
