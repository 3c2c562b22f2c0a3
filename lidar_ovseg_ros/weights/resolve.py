"""From a setting (a path, a catalog name, or nothing) to the model file `profile full` loads.

Used by the core builders, so the nodes, the CLI and the demo all resolve models the same way:
an empty setting means the method's default model from the cache, a catalog name means that
model from the cache, anything else is a path (checked by the loader as before). A model that is
neither cached nor given raises `ModelNotAvailableError` with one line naming it and the
`lidar-ovseg weights fetch ...` command.
"""

from __future__ import annotations

from pathlib import Path

from .catalog import CATALOG, HF_IDS, get_entry
from .fetch import ModelNotAvailableError, model_path
from .hub import cached_snapshot


def resolve_model_file(
    value: str | Path | None, default: str, cache_dir: str | Path | None = None
) -> Path:
    """`value` if it is a path; the cached model `value` if it is a catalog name; the cached
    model `default` when `value` is empty."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return model_path(default, cache_dir)
    if text in CATALOG and not Path(text).expanduser().exists():
        return model_path(text, cache_dir)
    return Path(text).expanduser()


def require_hub_model(model_id: str) -> None:
    """Refuse (one line) a catalog Hugging Face model that is not in the Hugging Face cache.

    Local folders and ids the catalog does not know are left to `from_pretrained`.
    """
    if Path(model_id).expanduser().is_dir():
        return
    name = HF_IDS.get(model_id)
    if name is None:
        return
    entry = get_entry(name)
    if cached_snapshot(entry) is None:
        raise ModelNotAvailableError(
            f"model '{name}' ({model_id}) is not in the Hugging Face cache: run "
            f"`{entry.fetch_command}`"
        )
