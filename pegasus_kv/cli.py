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


def _cmd_onebox(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pegasus_kv.testing import onebox  # the cluster tooling loads only when asked
    from pegasus_kv.testing.onebox_state import OneboxDirError

    data_dir = Path(args.data_dir)
    try:
        if args.onebox_command == "start":
            options = onebox.OneboxOptions(
                data_dir=data_dir,
                base_port=args.base_port,
                meta_servers=args.meta_servers,
                replica_servers=args.replica_servers,
                meta_store=args.meta_store,
                timeout_s=args.timeout,
            )
            return onebox.start_onebox(options)
        if args.onebox_command == "status":
            return onebox.print_status(data_dir, as_json=args.json)
        if args.onebox_command == "stop":
            return onebox.stop_onebox(data_dir)
        if args.onebox_command == "clean":
            return onebox.clean_onebox(data_dir)
        if args.onebox_command == "stop-node":
            return onebox.stop_node(data_dir, args.name, kill=args.kill)
        if args.onebox_command == "start-node":
            return onebox.start_node(data_dir, args.name)
    except (onebox.OneboxError, OneboxDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(f"unknown onebox command {args.onebox_command!r}")


def _cmd_bench(args: argparse.Namespace) -> int:
    from pegasus_kv.bench.command import run_bench  # the benchmark loads only when asked
    from pegasus_kv.bench.runner import BenchConfig

    duration_s = args.duration_s
    operation_count = args.operation_count
    if operation_count is None and duration_s is None:
        operation_count = 1000
    config = BenchConfig(
        meta=args.meta,
        table=args.table,
        workload=args.workload,
        record_count=args.record_count,
        operation_count=operation_count,
        duration_s=duration_s,
        field_count=args.field_count,
        field_length=args.field_length,
        threads=args.threads,
        processes=args.processes,
        warmup_s=args.warmup_s,
        read_one_field=args.read_one_field,
        seed=args.seed,
    )
    return run_bench(config, skip_load=args.skip_load, as_json=args.json)


def _add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pegasus_kv.bench.workloads import WORKLOADS

    bench = sub.add_parser(
        "bench",
        help="run a YCSB core workload (A-F, write-only, read-only) against a cluster",
        description="YCSB-style benchmark: a load phase inserts --record-count records (hash key "
        "'user'+FNV-64 of the key number, one sort key per field), then a run phase issues the "
        "workload's mix for --operation-count operations or --duration-s seconds, from --threads "
        "client tasks spread over --processes processes. Prints a progress line on stderr every "
        "second and, per phase, ops/s and p50/p95/p99/p99.9/max latency per operation type, with "
        "errors by exception class. SCAN of length L (1..100) reads at most L fields of one record, as a "
        "sort-key range read: hash keys have no cluster-wide order to scan records by. --json prints "
        '{"load": summary|null, "run": summary}.',
    )
    bench.add_argument("--meta", default="127.0.0.1:34601", help="meta server address(es) (default onebox's)")
    bench.add_argument("--table", default="temp", help="the table to use (default temp)")
    bench.add_argument(
        "--workload",
        choices=tuple(WORKLOADS),
        default="a",
        help="a: 50/50 read/update zipfian; b: 95/5 read/update zipfian; c: read zipfian; d: 95/5 "
        "read/insert latest; e: 95/5 scan/insert zipfian; f: 50/50 read/read-modify-write zipfian; "
        "write-only: update uniform; read-only: read uniform (default a)",
    )
    bench.add_argument(
        "--record-count", type=int, default=1000, help="records of the load phase (default 1000)"
    )
    how_long = bench.add_mutually_exclusive_group()
    how_long.add_argument(
        "--operation-count", type=int, help="operations of the run phase (default 1000 unless --duration-s)"
    )
    how_long.add_argument("--duration-s", type=float, help="run for this many seconds instead of a count")
    bench.add_argument("--field-count", type=int, default=1, help="fields (sort keys) per record (default 1)")
    bench.add_argument("--field-length", type=int, default=100, help="bytes per field value (default 100)")
    bench.add_argument("--threads", type=int, default=8, help="concurrent client tasks in all (default 8)")
    bench.add_argument(
        "--processes", type=int, default=1, help="worker processes sharing the tasks (default 1)"
    )
    bench.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="seconds of run-phase load excluded from the stats (default 0)",
    )
    bench.add_argument(
        "--skip-load", action="store_true", help="skip the load phase (records already loaded)"
    )
    bench.add_argument(
        "--read-one-field", action="store_true", help="READ gets one random field instead of the whole record"
    )
    bench.add_argument("--seed", type=int, help="seed the key and operation choices (default: random)")
    bench.add_argument("--json", action="store_true", help="print the summaries as JSON")
    bench.set_defaults(func=_cmd_bench)


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
    onebox = sub.add_parser(
        "onebox",
        help="run a whole cluster on this machine, in the background",
        description="A local cluster for development and tests: meta and replica servers as detached "
        "processes, every node in DIR/<name>/ (config.toml, data, server.log), their pids and addresses "
        "in DIR/onebox.json.",
    )
    onebox_sub = onebox.add_subparsers(dest="onebox_command", metavar="SUBCOMMAND")
    onebox_sub.required = True

    def onebox_command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        command = onebox_sub.add_parser(name, help=help_text, description=description)
        command.add_argument("--data-dir", required=True, metavar="DIR", help="the onebox directory")
        command.set_defaults(func=_cmd_onebox)
        return command

    start = onebox_command(
        "start",
        "start the cluster and wait until table temp is healthy",
        "Start one meta server (embedded local meta store, no ZooKeeper) and three replica servers on "
        "127.0.0.1, create table temp (8 partitions, 3 replicas), wait until every partition has a "
        "primary and two secondaries, and print where everything listens. The leading meta serves the "
        "admin shell over SSH (meta i on base port + 100 + i): a key pair for you is made in DIR/ssh/ "
        "(id_ed25519), authorized as admin in DIR/ssh/authorized_keys, and the ssh command is printed. "
        "In a DIR that already holds a onebox, start the nodes that are not running, with their configs "
        "and data.",
    )
    start.add_argument(
        "--base-port",
        type=int,
        default=34601,
        help="meta servers listen from this port, replica servers from it + 200, their Prometheus "
        "metrics from it + 300 (meta) and + 400 (replica); 0 picks free ports (default 34601)",
    )
    start.add_argument("--meta-servers", type=int, default=1, help="how many meta servers (default 1)")
    start.add_argument("--replica-servers", type=int, default=3, help="how many replica servers (default 3)")
    start.add_argument(
        "--meta-store",
        choices=("local", "zookeeper"),
        default="local",
        help="local: the embedded store, one meta; zookeeper: also start a local ZooKeeper (Debian's "
        "zookeeper package) shared by the meta servers",
    )
    start.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for a healthy cluster (default 60)"
    )
    status = onebox_command(
        "status",
        "show the nodes, their addresses, pids and metrics URLs",
        "Show every node's address, pid, log and Prometheus metrics URL. With --json print "
        '{"meta": [addresses], "replica": [addresses], "ssh": "host:port", "pids": {name: pid}, '
        '"metrics": {name: url}, "ssh_command": "ssh -i ...", "ssh_key": path}; '
        'a pid is null when that node is not running; "ssh" is the admin shell of the meta leading now '
        '("" when none runs) and "ssh_command" logs in to it as admin with "ssh_key".',
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    onebox_command(
        "stop",
        "stop every node (SIGTERM, SIGKILL after a grace)",
        "Stop every node: SIGTERM, then SIGKILL those still running after 10 s. Data stays; onebox "
        "start restarts the same cluster.",
    )
    onebox_command(
        "clean",
        "stop the cluster and remove its directory",
        "Stop every node and remove what onebox created in DIR (its node directories and onebox.json). "
        "Refuses a DIR that has no onebox.json.",
    )
    stop_node = onebox_command(
        "stop-node",
        "stop one node (e.g. replica1), to inject a failure",
        "Stop one node: SIGTERM (a graceful shutdown), or SIGKILL with --kill (a crash).",
    )
    stop_node.add_argument("name", help="the node: meta1, replica1, ... (see onebox status)")
    stop_node.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    start_node = onebox_command(
        "start-node",
        "start one stopped node again",
        "Start one node again with its existing config and data; it does not wait for health.",
    )
    start_node.add_argument("name", help="the node: meta1, replica1, ... (see onebox status)")
    _add_bench_parser(sub)
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
