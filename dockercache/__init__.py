"""dockercache: declarative, reliable Docker build caching for CI."""

from .errors import ConfigError, DockercacheError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DockercacheError", "__version__"]
