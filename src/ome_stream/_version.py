"""The installed version of ome-stream."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ome-stream")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "uninstalled"
