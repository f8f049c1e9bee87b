"""sentcli: build small transformer sentence encoders end to end."""

__version__ = "0.1.0"

from sentcli.errors import SentcliError  # noqa: E402

__all__ = ["SentcliError", "__version__"]
