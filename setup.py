"""ament_python build for lidar_ovseg_ros; also a plain pip-installable Python library."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "lidar_ovseg_ros"
# colcon's --symlink-install runs a symlink to this file from build/<pkg>/: resolve it so the
# requirements files are read from the source folder.
HERE = Path(__file__).resolve().parent


def _requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _share(subdir: str, pattern: str) -> tuple[str, list[str]]:
    # Globbed in the source folder; the relative paths also resolve in colcon's build folder,
    # where colcon symlinks every data file before running this script there.
    return (f"share/{PACKAGE}/{subdir}", sorted(glob(f"{subdir}/{pattern}", root_dir=HERE)))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["data/frames/*/*", "data/frames/README.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        _share("launch", "*.launch.py"),
        _share("config", "*.yaml"),
        _share("config/vocabularies", "*.yaml"),
        _share("config/dds", "*.xml"),
        _share("rviz", "*.rviz"),
    ],
    python_requires=">=3.10",
    install_requires=_requirements("requirements.txt"),
    extras_require={
        "test": _requirements("requirements-test.txt"),
        # GPU stack: CUDA builds of torch come from the PyTorch index; sparse convs from spconv.
        "cu118": ["spconv-cu118"],
        "cu12": ["spconv-cu121"],
    },
    zip_safe=False,
    maintainer="lidar_ovseg_ros developers",
    maintainer_email="lidar-ovseg@example.com",
    description="Open-vocabulary 3D semantics for ROS 2: IGLOSS LiDAR segmentation, POP-3D.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "lidar_ovseg_node = lidar_ovseg_ros.nodes.lidar_ovseg_node:main",
            "camera_occupancy_node = lidar_ovseg_ros.nodes.camera_occupancy_node:main",
            "camera_ssc_node = lidar_ovseg_ros.nodes.camera_ssc_node:main",
            "lidar-ovseg = lidar_ovseg_ros.cli:main",
        ],
    },
)
