"""The admin shell's commands on a real onebox cluster, driven in-process through `Shell.execute`
(the SSH layer is tested on its own): every command, its JSON parsed, its exit status; a readonly
key refused every change; bad arguments answered with a usage line; and Ctrl-C in the middle of a
long count or scan, after which the cluster still serves every record.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from pegasus_kv import Client
from pegasus_kv.shell import CollectingOutput, Outcome, Role, Shell

from .onebox_support import onebox, running_onebox

pytestmark = pytest.mark.integration

STORY_TIMEOUT_S = 120.0
MOVE_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def meta_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_onebox(tmp_path_factory.mktemp("shell") / "onebox") as data_dir:
        status = json.loads(onebox("status", "--data-dir", str(data_dir), "--json").stdout)
        yield status["meta"][0]


def run_story(meta: str, story: Callable[[Client], Awaitable[None]]) -> None:
    async def with_client() -> None:
        async with Client(meta) as client:
            await story(client)

    asyncio.run(asyncio.wait_for(with_client(), timeout=STORY_TIMEOUT_S))


class Session:
    """One shell session and what its last command printed."""

    def __init__(self, client: Client, role: Role = Role.ADMIN) -> None:
        self.shell = Shell(client, role=role, cluster_name="onebox")
        self.out = CollectingOutput()

    async def run(self, line: str) -> Outcome:
        self.out = CollectingOutput()
        return await self.shell.execute(line, self.out)

    async def ok(self, line: str) -> str:
        outcome = await self.run(line)
        assert outcome == Outcome(0, "ok"), (line, outcome, self.out.stderr)
        return self.out.stdout

    async def json(self, line: str) -> Any:
        await self.ok(line + " --json")
        return self.out.json()

    async def fails(self, line: str, exit_status: int) -> str:
        outcome = await self.run(line)
        assert outcome.exit_status == exit_status, (line, outcome, self.out.stdout)
        assert "Traceback" not in self.out.stderr
        return self.out.stderr


async def wait_for(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MOVE_TIMEOUT_S
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


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


def test_every_command_on_a_real_cluster(meta_address: str) -> None:
    async def story(client: Client) -> None:
        s = Session(client)
        assert (await s.ok("help")).count("\n") > 30
        assert "usage: full_scan" in await s.ok("help full_scan")
        assert (await s.json("version"))["version"]

        info = await s.json("cluster_info")
        assert info["cluster_name"] == "onebox" and info["primary_meta_server"] == meta_address
        assert info["alive_node_count"] == 3 and info["tick_ms"] > 0
        nodes = (await s.json("nodes -d"))["nodes"]
        assert len(nodes) == 3 and all(node["status"] == "alive" for node in nodes)
        assert "3 nodes, 3 alive" in await s.ok("nodes")
        assert (await s.json("get_meta_level"))["meta_level"] == "steady"
        assert (await s.json("set_meta_level lively"))["meta_level"] == "lively"
        assert (await s.ok("get_meta_level")) == "lively\n"
        await s.ok("set_meta_level steady")

        created = await s.json("create shelltab -p 4 -r 3 -e replica.note=made_by_shell")
        assert created["ready"] and created["partition_count"] == 4
        assert "TABLE_EXISTS" in await s.fails("create shelltab", 1)
        listed = {table["app_name"]: table for table in (await s.json("ls -d"))["tables"]}
        assert listed["shelltab"]["partition_count"] == 4 and listed["shelltab"]["envs_count"] == 1
        app = await s.json("app shelltab -d")
        assert app["envs"] == {"replica.note": "made_by_shell"} and len(app["partitions"]) == 4
        assert "pidx" in await s.ok("app shelltab -d")

        # Data commands, on the current table.
        assert "no table selected; use TABLE" in await s.fails("get a b", 2)
        await s.ok("use shelltab")
        assert s.shell.prompt == "pegasus-kv onebox [shelltab] >>> "
        await s.ok(r"set alice name Alice\x00 600")
        assert (await s.json("get alice name"))["value"] == "Alice\\x00"
        assert (await s.json("exist alice name"))["exist"] is True
        assert 590 <= (await s.json("ttl alice name"))["ttl_seconds"] <= 600
        assert (await s.json("incr alice visits 5"))["new_value"] == 5
        await s.ok("multi_set alice city Paris lang fr zip 75001")
        assert (await s.json("count alice"))["count"] == 5
        got = await s.json("multi_get alice city zip")
        assert [item["value"] for item in got["items"]] == ["Paris", "75001"]
        ranged = await s.json("multi_get_range alice c m -s prefix -y l")
        assert [item["sort_key"] for item in ranged["items"]] == ["lang"]
        sort_keys = await s.json("multi_get_sortkeys alice")
        assert [item["sort_key"] for item in sort_keys["items"]] == ["city", "lang", "name", "visits", "zip"]
        cas = await s.json("check_and_set alice -c lang -t bytes_equal -o fr -v en -r")
        assert cas == {"passed": True, "check_value_exist": True, "check_value": "fr"}
        assert not (await s.json("check_and_set alice -c lang -t not_exist -v de"))["passed"]
        cam = await s.json(
            "check_and_mutate alice -c visits -t int_greater_or_equal -o 5 set tier gold del zip"
        )
        assert cam == {"passed": True}
        assert (await s.json("multi_del alice tier nope"))["deleted"] == 1
        assert (await s.json("multi_del_range alice a d"))["deleted"] == 1  # city
        await s.ok("del alice lang")
        assert (await s.json("hash_scan alice '' ''"))["count"] == 2  # name, visits
        hashed = await s.json("hash alice x")
        assert hashed["app_name"] == "shelltab" and hashed["primary"] in {node["address"] for node in nodes}
        scanned = await s.json("full_scan")
        assert {(row["hash_key"], row["sort_key"]) for row in scanned["rows"]} == {
            ("alice", "name"),
            ("alice", "visits"),
        }
        assert (await s.json("count_data -d"))["total"] == {"rows": 2, "hash_keys": 1}

        # App envs of the current table.
        assert (await s.json("get_app_envs"))["envs"] == {"replica.note": "made_by_shell"}
        envs = (
            await s.json("set_app_envs manual_compact.once.trigger_time 0 rocksdb.usage_scenario normal")
        )["envs"]
        assert len(envs) == 3
        assert "rocksdb.usage_scenario" not in (await s.json("del_app_envs rocksdb.usage_scenario"))["envs"]
        assert (await s.json("clear_app_envs -p manual_compact"))["envs"] == {"replica.note": "made_by_shell"}
        assert (await s.json("clear_app_envs --all"))["envs"] == {}

        # Moving replicas by hand: a role switch through balance, a refused proposal. `create` is
        # ready once every partition has a primary; on a busy machine the secondaries come later.
        async def first_partition_healthy() -> bool:
            return bool((await s.json("app shelltab -d"))["partitions"][0]["health"] == "healthy")

        await wait_for(first_partition_healthy, "partition 0 to have its secondaries")
        config = (await s.json("app shelltab -d"))["partitions"][0]
        gpid = f"{app['app_id']}.0"
        old_primary, new_primary = config["primary"], config["secondaries"][0]
        moved = await s.json(f"balance -g {gpid} -p move_pri -f {old_primary} -t {new_primary}")
        assert moved["accepted"], moved

        async def switched() -> bool:
            partition = (await s.json("app shelltab -d"))["partitions"][0]
            return bool(partition["primary"] == new_primary and partition["health"] == "healthy")

        await wait_for(switched, "the primary role to move")
        refused = await s.fails(f"propose -g {gpid} -p downgrade_to_secondary -n {old_primary}", 1)
        assert "REFUSED" in refused and "not the primary" in refused
        assert "refused" in s.out.stdout  # the answer is printed too
        await s.run(f"propose -g {gpid} -p downgrade_to_secondary -n {old_primary} --json")
        assert s.out.json()["accepted"] is False and s.out.json()["config"]["primary"] == new_primary
        proposed = await s.json(
            f"propose -g {gpid} -p downgrade_to_secondary -n {new_primary} -t {new_primary}"
        )
        assert proposed["accepted"], proposed

        async def cured() -> bool:
            partition = (await s.json("app shelltab -d"))["partitions"][0]
            return bool(partition["primary"] is not None and partition["health"] == "healthy")

        await wait_for(cured, "cure to promote a primary again")
        assert (await s.json("get alice name"))["found"]  # data survived both moves

        # Rename, drop with a hold period, recall.
        await s.ok("rename shelltab shelltab2")
        assert s.shell.current_table == "shelltab2"
        assert (await s.json("get alice visits"))["value"] == "5"
        dropped = await s.json("drop shelltab2 --hold-seconds 3600")
        assert dropped["app_id"] == app["app_id"]
        # Meta ticks count from the Unix epoch: the hold is an hour from now.
        assert 3590 < dropped["expire_time"] - time.time() < 3610
        assert s.shell.prompt == "pegasus-kv onebox >>> "  # the dropped table is no longer current
        assert "TABLE_NOT_FOUND" in await s.fails("use shelltab2", 1)
        everything = {table["app_name"]: table for table in (await s.json("ls -a"))["tables"]}
        assert everything["shelltab2"]["status"] == "dropped"
        recalled = await s.json(f"recall {app['app_id']} shelltab3")
        assert recalled == {"app_id": app["app_id"], "app_name": "shelltab3"}
        await s.ok("use shelltab3")
        assert (await s.json("get alice visits"))["value"] == "5"

        assert (await s.run("exit")).exit_requested

    run_story(meta_address, story)


def test_a_readonly_key_reads_but_changes_nothing(meta_address: str) -> None:
    async def story(client: Client) -> None:
        admin = Session(client)
        await admin.ok("use temp")
        await admin.ok("set ro key before")
        readonly = Session(client, Role.READONLY)
        await readonly.ok("use temp")
        assert (await readonly.json("get ro key"))["value"] == "before"
        assert (await readonly.json("ls"))["tables"]
        for line in ("set ro key after", "del ro key", "drop temp", "create x", "set_meta_level lively"):
            message = await readonly.fails(line, 3)
            assert message.startswith("permission denied:") and "key role is readonly" in message
        assert (await readonly.json("get ro key"))["value"] == "before"
        assert (await readonly.json("get_meta_level"))["meta_level"] == "steady"

    run_story(meta_address, story)


def test_bad_arguments_get_a_usage_line_and_exit_2(meta_address: str) -> None:
    async def story(client: Client) -> None:
        s = Session(client)
        await s.ok("use temp")
        for line, message in [
            ("frobnicate", "unknown command 'frobnicate'; type help"),
            ("set hk", "usage: set HASH_KEY SORT_KEY VALUE [TTL_SECONDS]"),
            ("get 'open quote", "unterminated quote"),
            ("multi_get_range hk a b -n 0", "usage: multi_get_range"),
            ("create t -p three", "takes an integer"),
            ("balance -g 1.0 -p move_pri -f a:1", "missing -t"),
            ("full_scan -p 99", "-p: the table has partitions 0..7"),
            (r"get \xZZ b", "two hex digits"),
        ]:
            assert message in await s.fails(line, 2), line

    run_story(meta_address, story)


class InterruptAtProgress(CollectingOutput):
    """Cancels the command's task at its first progress line, as the SSH layer does on Ctrl-C."""

    task: asyncio.Task[Outcome] | None = None

    def progress(self, text: str) -> None:
        super().progress(text)
        if self.task is not None:
            self.task.cancel()
            self.task = None


def test_ctrl_c_stops_count_data_and_full_scan_and_the_cluster_still_serves(meta_address: str) -> None:
    hash_keys, sort_keys = 200, 100

    async def story(client: Client) -> None:
        s = Session(client)
        await s.ok("create bulk -p 8")
        table = await client.open_table("bulk")
        for h in range(hash_keys):
            kvs = {f"s{i:03d}".encode(): b"x" * 100 for i in range(sort_keys)}
            await table.multi_set(f"user{h:04d}".encode(), kvs)
        await s.ok("use bulk")
        for line in ("count_data -c 2 -b 100", "full_scan -n 100000 -t 5000"):
            out = InterruptAtProgress()
            before = asyncio.all_tasks()
            task = asyncio.create_task(s.shell.execute(line, out))
            out.task = task
            with pytest.raises(asyncio.CancelledError):
                await task
            assert out.progress_lines, line
            assert await tasks_once_scan_contexts_are_dropped() == before, "the command left a task behind"
        # The session goes on and every record is still there.
        counted = await s.json("count_data -c 4")
        assert counted["total"]["rows"] == hash_keys * sort_keys
        assert (await s.json("get user0042 s042"))["value"] == "x" * 100
        await s.ok("set user0042 s042 y")
        assert (await s.json("get user0042 s042"))["value"] == "y"

    run_story(meta_address, story)
