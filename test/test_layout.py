"""Package layout: the core never imports commands, nodes/ holds nodes, bags/ is ROS-free."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lidar_ovseg_ros"


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_core_and_nodes_never_import_commands():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "commands" or rel.name == "cli.py":
            continue
        bad = {
            m
            for m in _imported_modules(path)
            if m.startswith(("lidar_ovseg_ros.commands", "lidar_ovseg_ros.cli"))
        }
        if bad:
            offenders[str(rel)] = sorted(bad)
    assert not offenders, offenders


def test_nodes_folder_holds_only_nodes():
    """nodes/ holds `*_node.py` modules that define a node class, and helpers those import."""
    folder = PACKAGE / "nodes"
    nodes = sorted(folder.glob("*_node.py"))
    assert nodes
    used = set()
    for path in nodes:
        tree = ast.parse(path.read_text())
        bases = {
            ast.unparse(b) for n in ast.walk(tree) if isinstance(n, ast.ClassDef) for b in n.bases
        }
        assert any(b.endswith("Node") for b in bases), f"{path.name} defines no node class"
        used |= _imported_modules(path)
    helpers = {p for p in folder.glob("*.py") if p.name != "__init__.py" and p not in nodes}
    reached: set[Path] = set()
    while True:  # helpers imported by the nodes, or by helpers they import
        new = {p for p in helpers - reached if f"lidar_ovseg_ros.nodes.{p.stem}" in used}
        if not new:
            break
        reached |= new
        for path in new:
            used |= _imported_modules(path)
    orphans = sorted(p.name for p in helpers - reached)
    assert not orphans, f"nodes/ holds modules no node uses: {orphans}"


def test_bag_core_imports_no_rclpy():
    code = (
        "import sys, lidar_ovseg_ros.bags, lidar_ovseg_ros.bags.storage, "
        "lidar_ovseg_ros.bags.demo_bag;"
        "bad = [m for m in ('rclpy', 'lidar_ovseg_ros.commands') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
