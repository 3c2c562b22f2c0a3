"""Released models: the catalog, fetching into one cache, verification and resolution by name.

ROS-free. See `catalog` (the table), `fetch` (download/install/verify), `resolve` (what
`profile full` loads when no path is given) and `prototype_images` (the IGLOSS images used as
exemplars of the nuscenes / semantickitti presets).
"""

from .cache import ENV_CACHE, cache_root
from .catalog import CATALOG, METHODS, ModelEntry, UnknownModelError, entries_for, get_entry
from .download import ENV_OFFLINE, ChecksumMismatchError, DownloadError
from .fetch import (
    FetchError,
    ModelNotAvailableError,
    ModelStatus,
    fetch,
    model_path,
    status,
    verify,
)
from .resolve import require_hub_model, resolve_model_file

__all__ = [
    "CATALOG",
    "ENV_CACHE",
    "ENV_OFFLINE",
    "METHODS",
    "ChecksumMismatchError",
    "DownloadError",
    "FetchError",
    "ModelEntry",
    "ModelNotAvailableError",
    "ModelStatus",
    "UnknownModelError",
    "cache_root",
    "entries_for",
    "fetch",
    "get_entry",
    "model_path",
    "require_hub_model",
    "resolve_model_file",
    "status",
    "verify",
]
