"""Runtimes behind one interface (:class:`~edge_sameo.backends.base.Backend`)."""

from edge_sameo.backends.base import PRECISIONS, Backend, DecoderOutput

__all__ = ["PRECISIONS", "Backend", "DecoderOutput"]
