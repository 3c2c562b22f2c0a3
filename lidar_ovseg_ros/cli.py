"""`lidar-ovseg`: offline commands (segment, build-prototypes, eval, and those others add).

Subcommands are modules of `lidar_ovseg_ros.commands`: each defines `register(subparsers)`, which
adds its parser and sets `handler=<function(args) -> int>`. Dropping a module there is all it takes
to add a command; heavy imports belong inside the handler so `--help` stays fast.

Expected problems (a missing file, a bad option value) end with one `lidar-ovseg: error: ...`
line and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

PROG = "lidar-ovseg"
COMMANDS_PACKAGE = "lidar_ovseg_ros.commands"
EXIT_USAGE = 2


def _broken_command(name: str, error: Exception):
    def register(subparsers) -> None:
        parser = subparsers.add_parser(name, help=f"(unavailable: {error})")
        parser.set_defaults(handler=lambda _args: _fail(f"command '{name}' cannot load: {error}"))

    return register


def command_modules(only: str | None = None) -> list[tuple[str, object]]:
    """(name, register function) of every module in `lidar_ovseg_ros.commands`, sorted; with
    `only`, just the module of that name (if there is one)."""
    package = importlib.import_module(COMMANDS_PACKAGE)
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or (only is not None and info.name != only):
            continue
        try:
            module = importlib.import_module(f"{COMMANDS_PACKAGE}.{info.name}")
        except ImportError as exc:  # one broken command must not take the others down
            found.append((info.name, _broken_command(info.name.replace("_", "-"), exc)))
            continue
        register = getattr(module, "register", None)
        if callable(register):
            found.append((info.name, register))
    return found


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command; with `command` (e.g. 'replay'), only that command's module
    is imported when its module has that name, so light commands (replay, record, demo-bag)
    start without the heavy imports of the others (torch)."""
    if command is not None and not command.startswith("-"):
        parser = _parser(command_modules(command.replace("-", "_")))
        if command in _choices(parser):
            return parser
    return _parser(command_modules())


def _parser(modules: list[tuple[str, object]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Open-vocabulary LiDAR segmentation (IGLOSS) and related offline tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, register in modules:
        register(subparsers)
    return parser


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    return {c for a in parser._actions if a.dest == "command" for c in a.choices or ()}


def split_ros_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(command arguments, ROS arguments): the `--ros-args ... [--]` sections that `ros2 run` and
    launch_ros append (launch_ros always adds `--ros-args`) are set aside for rclpy."""
    plain: list[str] = []
    ros: list[str] = []
    inside = False
    for arg in argv:
        if arg == "--ros-args":
            inside = True
            ros.append(arg)
        elif inside and arg == "--":
            inside = False
            ros.append(arg)
        else:
            (ros if inside else plain).append(arg)
    return plain, ros


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in str(exc):
        return f"file not found: {exc.filename}"
    if isinstance(exc, FileNotFoundError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())  # one line


def main(argv: Sequence[str] | None = None) -> int:
    # Library warnings (e.g. "profile 'tiny' ... UNTRAINED") reach the terminal once, plainly.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    argv, ros_args = split_ros_args(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    args.ros_args = ros_args  # for the commands that start rclpy (replay, record, demo)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args) or 0)
    except FileNotFoundError as exc:
        return _fail(_describe(exc))
    except ValueError as exc:  # configuration / format errors of this package are ValueErrors
        return _fail(_describe(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
