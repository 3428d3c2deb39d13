"""``kale-magic snapshot create|list|restore|diff|prune``: snapshots from the shell.

The main ``kale-magic`` command calls ``add_parser``; each subcommand's handler is
stored as ``func`` on the parsed arguments and returns an exit status.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import human_size, parse_size
from ..layout import KaleDir
from . import DEFAULT_MAX_BYTES, DEFAULT_WARN_BYTES, diff, list_snapshots, prune, restore, take_snapshot



def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("snapshot", help="create, list, restore and compare workspace snapshots")
    parser.add_argument("--store", type=Path, help="snapshot store (default: ROOT/.kale/snapshots)")
    _workspace_options(parser, Path("."))
    commands = parser.add_subparsers(dest="snapshot_command", required=True)

    create = commands.add_parser("create", help="snapshot the workspace now")
    create.add_argument("--snapshot-max", type=parse_size, default=DEFAULT_MAX_BYTES,
                        help=f"refuse above this size (default {human_size(DEFAULT_MAX_BYTES)})")
    create.add_argument("--snapshot-warn", type=parse_size, default=DEFAULT_WARN_BYTES,
                        help=f"warn above this size (default {human_size(DEFAULT_WARN_BYTES)})")
    create.set_defaults(func=_create)

    commands.add_parser("list", help="list snapshots, oldest first").set_defaults(func=_list)

    restore_cmd = commands.add_parser("restore", help="write a snapshot's files to a new folder")
    restore_cmd.add_argument("id", help="snapshot id, a unique prefix of one, or 'latest'")
    restore_cmd.add_argument("dest", type=Path, help="folder to create (must be absent or empty)")
    restore_cmd.set_defaults(func=_restore)

    diff_cmd = commands.add_parser("diff", help="files and packages that differ between two snapshots")
    diff_cmd.add_argument("a")
    diff_cmd.add_argument("b")
    diff_cmd.set_defaults(func=_diff)

    prune_cmd = commands.add_parser("prune", help="delete all but the newest snapshots and unshared content")
    prune_cmd.add_argument("--keep", type=int, required=True, metavar="N", help="how many of the newest to keep")
    prune_cmd.set_defaults(func=_prune)
    for command in commands.choices.values():  # --dir after the subcommand too, as on `kale-magic runs`
        _workspace_options(command, argparse.SUPPRESS)
    return parser


class _OldSpelling(argparse.Action):
    """``--root``: what ``--dir`` was called here before every subcommand spelled it ``--dir``."""

    def __call__(self, parser, namespace, values, option_string=None):
        import sys

        print("kale-magic: snapshot --root is deprecated; use --dir (as every kale-magic command does).",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def _workspace_options(parser, default) -> None:
    parser.add_argument("--dir", dest="root", type=Path, default=default, metavar="DIR",
                        help="the notebooks' folder, the workspace (default: .)")
    parser.add_argument("--root", dest="root", type=Path, default=default, action=_OldSpelling,
                        help=argparse.SUPPRESS)


def _store(args) -> Path:
    return args.store or KaleDir(args.root).snapshots


def _create(args) -> int:
    snapshot = take_snapshot(args.root, _store(args), warn_bytes=args.snapshot_warn,
                             max_bytes=args.snapshot_max)
    for warning in snapshot.warnings:
        print(f"warning: {warning}")
    print(snapshot.summary())
    return 0


def _list(args) -> int:
    for snapshot in list_snapshots(_store(args)):
        print(f"{snapshot.id}  {snapshot.file_count:>6} files  {human_size(snapshot.total_bytes):>10}")
    return 0


def _restore(args) -> int:
    print(restore(_store(args), args.id, args.dest))
    return 0


def _diff(args) -> int:
    changes = diff(_store(args), args.a, args.b)
    print("\n".join(changes.lines()) or "no differences")
    return 0


def _prune(args) -> int:
    pruned = prune(_store(args), args.keep)
    print(f"removed {len(pruned.snapshots)} snapshots and {pruned.objects} unshared files, "
          f"freed {human_size(pruned.freed_bytes)}")
    return 0
