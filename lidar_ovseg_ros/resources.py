"""Where the package's shared files (config/, launch/, rviz/) live, however it was installed."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "lidar_ovseg_ros"


def share_candidates() -> list[Path]:
    """The ament share folder (colcon install), the source checkout, the pip data-files prefix."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # no ament index entry: not a colcon install
        pass
    candidates.append(Path(__file__).resolve().parent.parent)
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    return candidates


def share_path(relative: str) -> Path:
    """The first existing `relative` path (e.g. 'config/lidar_ovseg.yaml') among the candidates."""
    tried = [c / relative for c in share_candidates()]
    for path in tried:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{relative} of {PACKAGE} not found; looked in: " + ", ".join(str(p) for p in tried)
    )
