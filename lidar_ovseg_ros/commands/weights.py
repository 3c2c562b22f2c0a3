"""`lidar-ovseg weights list|fetch|verify|path`: the released models, one command away."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "weights",
        help="list, fetch, verify and locate the released models",
        description="Released models (checkpoints, Hugging Face models, the IGLOSS prototype "
        "images) in one cache: $LIDAR_OVSEG_CACHE, else $XDG_CACHE_HOME/lidar_ovseg_ros, else "
        "~/.cache/lidar_ovseg_ros. Hugging Face models go to the Hugging Face cache.",
    )
    p.add_argument("--cache-dir", default=None, help="model cache (overrides $LIDAR_OVSEG_CACHE)")
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")

    ls = sub.add_parser("list", help="every known model: use, source, size, licence, cached")
    ls.add_argument("--method", default=None, help="only the models of this method")
    ls.set_defaults(handler=run_list)

    fe = sub.add_parser("fetch", help="download and install models into the cache")
    fe.add_argument("names", nargs="*", metavar="NAME", help="catalog names (see `list`)")
    fe.add_argument(
        "--all-for",
        metavar="METHOD",
        action="append",
        default=[],
        help="every model a method needs (repeatable): igloss, pop3d, openscene, 3d-avs, ...",
    )
    fe.add_argument(
        "--optional", action="store_true", help="with --all-for: also the optional models"
    )
    fe.add_argument(
        "--file", default=None, help="install this file downloaded by hand (one NAME only)"
    )
    fe.add_argument("--force", action="store_true", help="fetch again even when cached")
    fe.add_argument("--timeout", type=float, default=30.0, help="seconds without data (30)")
    fe.add_argument("--retries", type=int, default=3, help="resumptions of a cut download (3)")
    fe.set_defaults(handler=run_fetch)

    ve = sub.add_parser("verify", help="re-hash the cached models (all, or those named)")
    ve.add_argument("names", nargs="*", metavar="NAME")
    ve.set_defaults(handler=run_verify)

    pa = sub.add_parser("path", help="print where a cached model is (for scripts and launch files)")
    pa.add_argument("name", metavar="NAME")
    pa.set_defaults(handler=run_path)

    for action in (ls, fe, ve, pa):  # also accepted after the action
        action.add_argument("--cache-dir", default=argparse.SUPPRESS, help="model cache")
    p.set_defaults(handler=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_list(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.weights import CATALOG, cache_root, entries_for, status

    entries = entries_for(args.method) if args.method else list(CATALOG.values())
    print(f"cache: {cache_root(args.cache_dir)}  (Hugging Face models: the Hugging Face cache)")
    for e in entries:
        st = status(e, args.cache_dir)
        mark = "cached" if st.cached else ("partial" if st.detail.startswith("partial") else "-")
        opt = "" if e.required else ", optional"
        print(f"\n{e.name}  [{mark}]  ({', '.join(e.methods)}{opt})")
        print(f"  for:     {e.purpose}")
        where = e.url or (f"huggingface.co/{e.hf_repo}" if e.hf_repo else e.manual)
        if e.kind == "manual":
            where = f"{e.manual} (file-sharing page: download by hand, then fetch --file)"
        print(f"  from:    {where}")
        print(f"  cited:   {e.source}")
        print(f"  size:    {e.size or 'unknown'}")
        print(f"  licence: {e.licence}")
        if st.cached:
            print(f"  path:    {st.path}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.weights import entries_for, fetch, get_entry

    names = list(args.names)
    for method in args.all_for:
        names += [e.name for e in entries_for(method) if e.required or args.optional]
    if not names:
        raise ValueError("name at least one model, or --all-for METHOD (see `weights list`)")
    if args.file and len(names) != 1:
        raise ValueError("--file installs one model: give exactly one NAME")
    entries = [get_entry(n) for n in dict.fromkeys(names)]
    failed = []
    for e in entries:
        if e.kind == "manual" and not args.file and args.all_for and e.name not in args.names:
            print(f"{e.name}: by hand only: {e.manual} then `{e.fetch_command} --file PATH`")
            continue
        try:
            path = fetch(
                e,
                args.cache_dir,
                file=args.file,
                force=args.force,
                timeout=args.timeout,
                retries=args.retries,
            )
        except (OSError, ValueError) as exc:
            print(f"lidar-ovseg: error: {exc}", file=sys.stderr)
            failed.append(e.name)
            continue
        print(f"{e.name}: {path}  (licence: {e.licence})")
    if failed:
        print(f"lidar-ovseg: not fetched: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.weights import CATALOG, ModelNotAvailableError, get_entry, status, verify

    entries = [get_entry(n) for n in args.names] or [
        e for e in CATALOG.values() if status(e, args.cache_dir).cached
    ]
    bad = 0
    for e in entries:
        try:
            problems = verify(e, args.cache_dir)
        except ModelNotAvailableError as exc:
            print(f"{e.name}: {exc}")
            bad += 1
            continue
        if problems:
            bad += 1
            print(f"{e.name}: DAMAGED")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"{e.name}: ok")
    if not entries:
        print("nothing cached yet")
    return 1 if bad else 0


def run_path(args: argparse.Namespace) -> int:
    from lidar_ovseg_ros.weights import model_path

    print(model_path(args.name, args.cache_dir))
    return 0
