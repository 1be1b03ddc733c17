"""deconfound: de-confounded emotion recognition by causal intervention (backdoor adjustment)."""

from deconfound.errors import ConfigError, DataError, DeconfoundError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "DeconfoundError", "__version__"]
