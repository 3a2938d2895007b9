"""The data and scan commands over the real client, against the in-process fake cluster of the
client's tests: what an operator types, what comes back (tables and JSON), and Ctrl-C in the middle
of a long count or scan, which must close every scanner and leave no task behind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pegasus_kv import Client
from pegasus_kv.core.hashing import crc64_nvme, partition_index
from pegasus_kv.shell import CollectingOutput, Outcome, Role, Shell
from tests.unit.client.fake_cluster import FakeCluster, fake_cluster, run


def open_contexts(cluster: FakeCluster) -> int:
    return sum(store.open_scan_contexts for store in cluster.table("temp").stores)


async def execute(shell: Shell, line: str) -> CollectingOutput:
    out = CollectingOutput()
    outcome = await shell.execute(line, out)
    assert outcome == Outcome(0, "ok"), (line, outcome, out.stderr)
    return out


async def as_json(shell: Shell, line: str) -> Any:
    return (await execute(shell, line + " --json")).json()


async def tasks_once_scan_contexts_are_dropped() -> set[asyncio.Task[Any]]:
    """The running tasks, once the client's background drops of scan contexts have ended: a scan
    interrupted while its request was on the wire drops the context the late reply names, in a
    task of the client bounded by its clear timeout (client/scanner.py)."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while asyncio.get_running_loop().time() < deadline and any(
        task.get_name().startswith("clear abandoned scan context") for task in asyncio.all_tasks()
    ):
        await asyncio.sleep(0.02)
    return asyncio.all_tasks()


def test_records_go_in_and_come_out_escaped_as_pegasus_shows_them(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            shell = Shell(client, role=Role.ADMIN, cluster_name="fake")
            assert (await execute(shell, "use temp")).stdout.startswith("OK: current table is temp")
            assert shell.prompt == "pegasus-kv fake [temp] >>> "

            await execute(shell, r"set user\x00 name 'Ada Lovelace' 3600")
            got = await as_json(shell, r"get user\x00 name")
            assert got == {
                "hash_key": "user\\x00",
                "sort_key": "name",
                "value": "Ada Lovelace",
                "found": True,
            }
            assert (await execute(shell, r"get user\x00 name")).stdout == '"Ada Lovelace"\n'
            assert (await execute(shell, r"get user\x00 nobody")).stdout == "Not found\n"
            ttl = await as_json(shell, r"ttl user\x00 name")
            assert 3590 <= ttl["ttl_seconds"] <= 3600
            assert (await as_json(shell, r"exist user\x00 name"))["exist"] is True

            await execute(shell, r"multi_set cart apple 1 banana 2 cherry \xff\x00")
            cart = await as_json(shell, "multi_get cart")
            assert cart["complete"] and [item["sort_key"] for item in cart["items"]] == [
                "apple",
                "banana",
                "cherry",
            ]
            assert cart["items"][2]["value"] == "\\xff\\x00"  # binary stays printable, and typeable back
            human = (await execute(shell, "multi_get cart apple cherry")).stdout
            assert human.splitlines()[:3] == ["sort_key  value", '"apple"   "1"', '"cherry"  "\\xff\\x00"']

            window = await as_json(shell, "multi_get_range cart apple cherry -a false -b true -i")
            assert window["items"] == [{"sort_key": "banana"}, {"sort_key": "cherry"}]
            newest = await as_json(shell, "multi_get_range cart '' '' -r -n 1")
            assert [item["sort_key"] for item in newest["items"]] == ["cherry"] and not newest["complete"]
            prefixed = await as_json(shell, "multi_get_range cart '' '' -s prefix -y b")
            assert [item["sort_key"] for item in prefixed["items"]] == ["banana"]
            assert (await as_json(shell, "multi_get_sortkeys cart"))["count"] == 3
            assert (await as_json(shell, "count cart"))["count"] == 3

            assert (await as_json(shell, "incr cart apple 41"))["new_value"] == 42
            assert (await execute(shell, "incr cart apple -2")).stdout == "40\n"

            passed = await as_json(shell, "check_and_set cart -c apple -t int_equal -o 40 -s pear -v 7 -r")
            assert passed == {"passed": True, "check_value_exist": True, "check_value": "40"}
            refused = await execute(shell, "check_and_set cart -c plum -t exist -v 1")
            assert refused.stdout == "set failed, because check not passed\n"
            mutated = await as_json(shell, "check_and_mutate cart -c pear -t exist set kiwi 9 60 del banana")
            assert mutated == {"passed": True}
            assert (await as_json(shell, "ttl cart kiwi"))["ttl_seconds"] > 0
            assert (await as_json(shell, "exist cart banana"))["exist"] is False

            assert (await as_json(shell, "multi_del cart apple nothing"))["deleted"] == 1
            assert (await as_json(shell, "multi_del_range cart '' ''"))["deleted"] == 3
            assert (await as_json(shell, "count cart"))["count"] == 0
            await execute(shell, r"del user\x00 name")
            assert (await as_json(shell, r"get user\x00 name"))["found"] is False

            hashed = await as_json(shell, "hash cart x")
            assert hashed["hash"] == crc64_nvme(b"cart")
            assert hashed["partition_index"] == partition_index(b"cart", b"x", 8)
            assert hashed["primary"] == cluster.primary_of("temp", hashed["partition_index"]).address

    run(story())


def test_hash_works_without_a_table_too(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            shell = Shell(client, role=Role.READONLY, cluster_name="fake")
            # An empty hash key routes by the sort key (Pegasus).
            assert await as_json(shell, "hash '' abc") == {
                "hash_key": "",
                "sort_key": "abc",
                "hash": crc64_nvme(b"abc"),
            }

    run(story())


async def load(client: Client, hash_keys: int, sort_keys: int) -> None:
    table = await client.open_table("temp")
    for h in range(hash_keys):
        await table.multi_set(
            f"user{h:04d}".encode(), {f"s{s:03d}".encode(): b"v" * 10 for s in range(sort_keys)}
        )


def test_scans_stream_rows_and_stop_at_their_limit(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            await load(client, 20, 10)
            await client.open_table("temp")
            shell = Shell(client, role=Role.READONLY, cluster_name="fake")
            await execute(shell, "use temp")

            scanned = await as_json(shell, "hash_scan user0003 s002 s005 -b true")
            assert [row["sort_key"] for row in scanned["rows"]] == ["s002", "s003", "s004", "s005"]
            assert scanned["complete"]
            human = (await execute(shell, "hash_scan user0003 '' '' -n 2")).stdout
            assert human.splitlines() == [
                '"user0003" : "s000" => "vvvvvvvvvv"',
                '"user0003" : "s001" => "vvvvvvvvvv"',
                "",
                "2 key-value pairs got (stopped at -n 2; more rows may match).",
            ]

            everything = await as_json(shell, "full_scan -n 1000 -i")
            assert everything["count"] == 200 and everything["complete"]
            assert {row["value"] for row in everything["rows"]} == {None}
            limited = await as_json(shell, "full_scan -n 15")
            assert limited["count"] == 15 and not limited["complete"]
            filtered = await as_json(shell, "full_scan -h postfix -x 7 -s prefix -y s00 -n 1000")
            assert {row["hash_key"] for row in filtered["rows"]} == {"user0007", "user0017"}
            assert filtered["count"] == 20
            one = await as_json(shell, "full_scan -p 3 -n 1000")
            assert (
                one["count"]
                == sum(1 for h in range(20) if partition_index(f"user{h:04d}".encode(), b"", 8) == 3) * 10
            )
            assert open_contexts(cluster) == 0  # a scan stopped at -n closed its context

            out = CollectingOutput()
            assert (await shell.execute("count_data -c 3 -d -a --json", out)).exit_status == 0
            counted = out.json()
            assert counted["total"] == {
                "rows": 200,
                "hash_keys": 20,
                "key_bytes": 200 * 12,
                "value_bytes": 2000,
            }
            assert [p["partition"] for p in counted["partitions"]] == list(range(8))
            assert out.progress_lines[-1] == "count_data: 200 rows scanned, 8/8 partitions done"
            by_value = await as_json(shell, "count_data -v exact -z vvvvvvvvvv")
            assert by_value["total"]["rows"] == 200
            assert (await as_json(shell, "count_data -v prefix -z x"))["total"]["rows"] == 0

    run(story())


class CancelOnProgress(CollectingOutput):
    """Cancels the command's task at its first progress line, as Ctrl-C would, and notes how many
    scan contexts were open on the servers at that moment."""

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__()
        self.cluster = cluster
        self.task: asyncio.Task[Outcome] | None = None
        self.open_at_cancel = -1

    def progress(self, text: str) -> None:
        super().progress(text)
        if self.task is not None and self.open_at_cancel < 0:
            self.open_at_cancel = open_contexts(self.cluster)
            self.task.cancel()


def test_ctrl_c_in_count_data_or_full_scan_closes_every_scanner_and_leaves_no_task(tmp_path: Path) -> None:
    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            # 1500 rows a partition on average, read 100 at a time: contexts stay open for a while.
            await load(client, 400, 30)
            shell = Shell(client, role=Role.READONLY, cluster_name="fake")
            await execute(shell, "use temp")
            for line in ("count_data -c 4 -b 100", "full_scan -n 100000"):
                out = CancelOnProgress(cluster)
                out.task = asyncio.create_task(shell.execute(line, out))
                try:
                    await out.task
                    raise AssertionError(f"{line} finished instead of being interrupted")
                except asyncio.CancelledError:
                    pass
                if line.startswith("count_data"):
                    assert out.open_at_cancel > 0, "the interruption came while scans were under way"
                assert await tasks_once_scan_contexts_are_dropped() == {asyncio.current_task()}
                assert open_contexts(cluster) == 0
            # The session and the cluster are fine afterwards.
            assert (await as_json(shell, "count_data"))["total"]["rows"] == 12_000

    run(story())


def test_table_option_runs_one_command_on_a_table_without_use(tmp_path: Path) -> None:
    """A one-shot `ssh ... 'set --table temp hk sk v'` has no session to `use` a table in."""

    async def story() -> None:
        async with fake_cluster(tmp_path) as cluster, Client(cluster.meta_address) as client:
            del cluster
            shell = Shell(client, role=Role.ADMIN, cluster_name="fake")
            no_table = CollectingOutput()
            assert (await shell.execute("get hk sk", no_table)).exit_status == 2
            assert "no table selected" in no_table.stderr

            await execute(shell, "set --table temp hk sk 'from one shot'")
            assert (await as_json(shell, "get hk sk --table temp"))["value"] == "from one shot"
            assert shell.current_table is None  # --table chose a table for one command only
            assert shell.complete("get --ta", len("get --ta")) == ["--table"]

            unknown = CollectingOutput()
            outcome = await shell.execute("get --table nosuch hk sk", unknown)
            assert outcome.exit_status == 1 and "TABLE_NOT_FOUND" in outcome.summary

    run(story())
