"""Subcommands of `lidar-ovseg`: one module per command, each with `register(subparsers)`.

`register` adds the command's parser and sets `handler` (a function `args -> exit code`). Modules
whose name starts with `_` are helpers, not commands. See `lidar_ovseg_ros.cli`.
"""
