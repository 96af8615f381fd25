"""pymmcore-plus integration. Importing this package imports pymmcore-plus."""

from ._handler import HandlerError, OMEStreamHandler
from ._simulated import simulated_core

__all__ = ["HandlerError", "OMEStreamHandler", "simulated_core"]
