"""The `pegasus-kv` command.

Subcommands are added as the project grows: `onebox`, `meta`, `replica` and `bench` arrive with
the cluster and benchmark work. Each subcommand has help text (`pegasus-kv CMD --help`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pegasus_kv import __version__
from pegasus_kv.core.errors import PegasusError
from pegasus_kv.core.hashing import key_hash, partition_index


def _parse_bytes(text: str) -> bytes:
    return text.encode("utf-8")


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"pegasus-kv {__version__}")
    return 0


def _cmd_hash(args: argparse.Namespace) -> int:
    hash_key = _parse_bytes(args.hash_key)
    sort_key = _parse_bytes(args.sort_key)
    index = partition_index(hash_key, sort_key, args.partition_count)
    result = {
        "hash_key": args.hash_key,
        "sort_key": args.sort_key,
        "hash": key_hash(hash_key, sort_key),
        "partition_count": args.partition_count,
        "partition_index": index,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:<16} {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pegasus_kv.demo import run_demo

    return run_demo(args.data_dir)


def _cmd_replica(args: argparse.Namespace) -> int:
    from pegasus_kv.replication.replica.main import run_replica  # the server stack loads only when asked

    return run_replica(args.config)


def _cmd_meta(args: argparse.Namespace) -> int:
    from pegasus_kv.replication.meta.main import run_meta  # the server stack loads only when asked

    return run_meta(args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pegasus-kv",
        description="pegasus-kv: a distributed, strongly consistent key-value store (Pegasus-compatible).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version)

    hash_cmd = sub.add_parser(
        "hash",
        help="show the CRC-64/NVME hash and partition of a key",
        description="Show which partition a key routes to (hash of hash_key, or of sort_key when "
        "hash_key is empty), as the client computes it.",
    )
    hash_cmd.add_argument("hash_key", help="the hash key (UTF-8 text)")
    hash_cmd.add_argument("sort_key", nargs="?", default="", help="the sort key (UTF-8 text)")
    hash_cmd.add_argument(
        "-p", "--partition-count", type=int, default=8, help="the table's partition count (power of two)"
    )
    hash_cmd.add_argument("--json", action="store_true", help="print JSON")
    hash_cmd.set_defaults(func=_cmd_hash)

    demo = sub.add_parser(
        "demo",
        help="apply and read back a few writes on one local partition store",
        description="Open a RocksDB partition store, apply mutations, read them back with the data "
        "API, checkpoint and reopen. Uses a temporary directory unless --data-dir is given.",
    )
    demo.add_argument("--data-dir", help="directory to keep the store in (default: a temporary one)")
    demo.set_defaults(func=_cmd_demo)

    meta = sub.add_parser(
        "meta",
        help="run a meta server",
        description="Run one meta server until SIGTERM or SIGINT. The TOML file is described in "
        "pegasus_kv/replication/meta/config.py; PEGASUS_KV_META__<KEY> (and PEGASUS_KV_META__STORE__<KEY>) "
        "environment variables override its keys. Exit status: 0 after a clean shutdown, 1 on failure, "
        "2 for an invalid configuration.",
    )
    meta.add_argument("--config", required=True, metavar="FILE", help="the meta server's TOML file")
    meta.set_defaults(func=_cmd_meta)

    replica = sub.add_parser(
        "replica",
        help="run a replica server",
        description="Run one replica server until SIGTERM or SIGINT. The TOML file is described in "
        "pegasus_kv/replication/replica/config.py; PEGASUS_KV_REPLICA__<KEY> (and "
        "PEGASUS_KV_REPLICA__LOG__<KEY>, PEGASUS_KV_REPLICA__STORE__<KEY>) environment variables override "
        "its keys. Exit status: 0 after a clean shutdown, 1 on failure, 2 for an invalid configuration.",
    )
    replica.add_argument("--config", required=True, metavar="FILE", help="the replica server's TOML file")
    replica.set_defaults(func=_cmd_replica)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except PegasusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
