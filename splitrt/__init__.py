"""splitrt: an edge-cloud split-computing runtime for DNN inference."""

__version__ = "0.1.0"


def connect(target: str, model: str, **kwargs):
    """Open a client to a splitrt (or KServe v2) server; see :class:`splitrt.edge.client.SplitClient`."""
    from .edge.client import SplitClient

    return SplitClient(target, model, **kwargs)


def connect_async(target: str, model: str, **kwargs):
    """An asyncio client (``async with`` it); see :class:`splitrt.edge.aio.AsyncSplitClient`."""
    from .edge.aio import AsyncSplitClient

    return AsyncSplitClient(target, model, **kwargs)


__all__ = ["__version__", "connect", "connect_async"]
