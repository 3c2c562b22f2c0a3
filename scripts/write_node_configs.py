"""Write config/lidar_ovseg.yaml, config/camera_occupancy.yaml and config/camera_ssc.yaml from
the nodes' parameter dataclasses (descriptions, ranges, defaults), so the files never drift from
the code.

    python scripts/write_node_configs.py           # rewrite both files
    python scripts/write_node_configs.py --check   # exit 1 if a file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def expected() -> dict[Path, str]:
    from lidar_ovseg_ros.nodes.camera_occupancy_node import CameraNodeParams
    from lidar_ovseg_ros.nodes.camera_ssc_node import CameraSSCNodeParams
    from lidar_ovseg_ros.nodes.common import render_params_yaml
    from lidar_ovseg_ros.nodes.lidar_ovseg_node import LidarNodeParams

    return {
        ROOT / "config" / "lidar_ovseg.yaml": render_params_yaml(
            LidarNodeParams, "lidar_ovseg_node", "lidar_ovseg_ros/nodes/lidar_ovseg_node.py"
        ),
        ROOT / "config" / "camera_occupancy.yaml": render_params_yaml(
            CameraNodeParams,
            "camera_occupancy_node",
            "lidar_ovseg_ros/nodes/camera_occupancy_node.py",
        ),
        ROOT / "config" / "camera_ssc.yaml": render_params_yaml(
            CameraSSCNodeParams, "camera_ssc_node", "lidar_ovseg_ros/nodes/camera_ssc_node.py"
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args()
    stale = []
    for path, text in expected().items():
        if path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
