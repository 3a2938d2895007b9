"""pegasus-kv: a distributed, strongly consistent key-value store modelled on Apache Pegasus."""

from pegasus_kv.core.errors import ErrorCode, PegasusError

__version__ = "0.1.0"

__all__ = ["ErrorCode", "PegasusError", "__version__"]
