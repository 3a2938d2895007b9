"""The admin shell's SSH server, in-process, driven by asyncssh's client.

Stories: an operator runs one command and gets its output, errors and exit status; the audit log
records who ran what; a readonly key cannot write; unknown keys and passwords get nowhere; every way
out of the shell (forwarding, agent, sftp, env, an OS command) is refused and recorded; Ctrl-C stops
a hanging command and the session goes on; keys added to authorized_keys work without a restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from tests.unit.shell_ssh_support import ShellServerEnv, make_key, read_until, shell_server

T = TypeVar("T")
GUARD_S = 60.0


def run(tmp_path: Path, story: Callable[[ShellServerEnv], Coroutine[Any, Any, T]], **settings: Any) -> T:
    async def main() -> T:
        async with asyncio.timeout(GUARD_S), shell_server(tmp_path, **settings) as env:
            return await story(env)

    return asyncio.run(main())


def test_one_command_prints_its_output_exits_with_its_status_and_is_audited(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.admin) as conn:
            version = await conn.run("version --json")
            unknown = await conn.run("bash")
            bad_option = await conn.run("ls --bogus")
            two_lines = await conn.run("version\nversion")
            huge = await conn.run("get " + "k" * 70_000)

        assert version.exit_status == 0 and version.stderr == ""
        assert json.loads(str(version.stdout)) == {"version": "0.1.0"}
        # `bash` is a shell command like any other: there is no operating-system shell to reach.
        assert unknown.exit_status == 2 and unknown.stdout == ""
        assert "unknown command 'bash'" in str(unknown.stderr)
        assert bad_option.exit_status == 2
        assert "usage: ls" in str(bad_option.stderr) and "Traceback" not in str(bad_option.stderr)
        assert two_lines.exit_status == 2 and "one command per ssh invocation" in str(two_lines.stderr)
        assert huge.exit_status == 2 and "a command is at most 65536 characters" in str(huge.stderr)

        line = await env.audit_line("command", command="version --json")
        assert line["user"] == "ops"  # the SSH user name is recorded, the role comes from the key
        assert line["role"] == "admin" and line["fingerprint"] == env.admin.fingerprint
        assert line["peer"].startswith("127.0.0.1:") and line["session"] == "exec"
        assert line["outcome"] == "ok" and line["exit_status"] == 0 and line["duration_ms"] >= 0
        assert line["time"].endswith("+00:00")
        refused = await env.audit_line("command", command="bash")
        assert refused["exit_status"] == 2 and refused["outcome"].startswith("usage: unknown command")

    run(tmp_path, story)


def test_a_readonly_key_reads_but_may_not_change_the_cluster(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.readonly) as conn:
            create = await conn.run("create orders -p 4")
            version = await conn.run("version")

        assert create.exit_status == 3
        assert "permission denied: 'create' changes the cluster; key role is readonly" in str(create.stderr)
        assert version.exit_status == 0
        line = await env.audit_line("command", command="create orders -p 4")
        assert line["role"] == "readonly" and line["fingerprint"] == env.readonly.fingerprint
        assert line["exit_status"] == 3 and line["outcome"].startswith("denied:")

    run(tmp_path, story)


def test_unknown_keys_and_passwords_are_refused_at_authentication(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            async with env.connect(env.stranger):
                pass
        line = await env.audit_line("auth_refused", fingerprint=env.stranger.fingerprint)
        assert line["user"] == "ops" and line["outcome"].startswith("denied: no authorized key")

        with pytest.raises(asyncssh.PermissionDenied):
            async with env.connect(None, password="hunter2", preferred_auth="password,keyboard-interactive"):
                pass
        line = await env.audit_line("auth_refused", fingerprint="")
        assert "only public-key authentication" in line["outcome"]

    run(tmp_path, story)


def test_forwarding_sftp_env_and_agent_requests_are_refused_and_audited(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.admin, agent_forwarding=str(tmp_path / "no-agent")) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", 22)  # ssh -L
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)  # ssh -R
            with pytest.raises(asyncssh.Error):
                await conn.start_sftp_client()
            # env and agent requests need no reply: the command still runs, without them.
            result = await conn.run("version", env={"LC_SECRET": "1"})
            assert result.exit_status == 0
            # A PTY-backed exec of an OS shell is one more unknown shell command.
            sh = await conn.run("/bin/sh", term_type="xterm")
            assert sh.exit_status == 2 and "unknown command '/bin/sh'" in str(sh.stdout)

        refused = {
            line["request"]: line for line in await env.audit_lines() if line["event"] == "request_refused"
        }
        assert set(refused) >= {
            "local port forwarding",
            "remote port forwarding",
            "subsystem",
            "env",
            "agent forwarding",
        }
        assert refused["subsystem"]["outcome"] == "denied: subsystem is not allowed (sftp)"
        assert refused["env"]["outcome"] == "denied: env is not allowed (LC_SECRET)"
        assert all(line["fingerprint"] == env.admin.fingerprint for line in refused.values())

    run(tmp_path, story)


def test_ctrl_c_interrupts_a_one_shot_command(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.admin) as conn:
            process = await conn.create_process("ls")  # meta never answers: ls waits
            await asyncio.sleep(0.3)
            process.send_signal("INT")
            result = await process.wait()

        assert result.exit_status == 130
        assert result.stderr == "interrupted\n"
        line = await env.audit_line("command", command="ls")
        assert line["exit_status"] == 130 and line["outcome"] == "interrupted"

    run(tmp_path, story)


def test_an_interactive_session_edits_completes_interrupts_and_ends_with_ctrl_d(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.admin) as conn:
            process = await conn.create_process(term_type="xterm", term_size=(100, 30))
            banner = await read_until(process.stdout, ">>> ")
            assert "cluster test" in banner and "role admin" in banner
            assert banner.endswith("pegasus-kv test >>> ")

            process.stdin.write("vers\t")  # Tab completes the only command that starts so
            assert "version " in await read_until(process.stdout, "version ")
            process.stdin.write("--json\r")
            assert '{"version":"0.1.0"}' in await read_until(process.stdout, ">>> ")

            process.stdin.write("\x1b[A\r")  # up-arrow recalls the last line; Enter runs it again
            assert '{"version":"0.1.0"}' in await read_until(process.stdout, ">>> ")

            process.stdin.write("ex\t")  # exist and exit: completed up to what they share
            await read_until(process.stdout, "exi")
            process.stdin.write("t --\t")  # then the options of exit: none, the line stays
            process.stdin.write("\x15")  # Ctrl-U: drop the line

            process.stdin.write("ls\r")  # meta never answers: ls hangs until Ctrl-C
            await read_until(process.stdout, "ls\r\n")
            await asyncio.sleep(0.3)
            process.stdin.write("\x03")
            after = await read_until(process.stdout, ">>> ")
            assert "interrupted" in after

            process.stdin.write("version\r")  # the session goes on
            assert "pegasus-kv 0.1.0" in await read_until(process.stdout, ">>> ")
            process.stdin.write("\x04")  # Ctrl-D on an empty line ends it
            result = await process.wait()
        assert result.exit_status == 0

        commands = [line for line in await env.audit_lines() if line["event"] == "command"]
        assert [(line["command"], line["exit_status"]) for line in commands] == [
            ("version --json", 0),
            ("version --json", 0),
            ("ls", 130),
            ("version", 0),
        ]
        assert {line["session"] for line in commands} == {"shell"}

    run(tmp_path, story)


def test_several_candidates_are_listed_and_a_common_prefix_is_completed(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.admin) as conn:
            process = await conn.create_process(term_type="xterm", term_size=(100, 30))
            await read_until(process.stdout, ">>> ")
            process.stdin.write("multi_get_r\t")  # multi_get_range is the only one
            await read_until(process.stdout, "multi_get_range ")
            process.stdin.write("\x15multi_\t")  # multi_del, multi_get...: nothing to add, so list
            listing = await read_until(process.stdout, ">>> multi_")
            assert "multi_del_range" in listing and "multi_set" in listing
            process.stdin.write("\x15exit\r")
            assert (await process.wait()).exit_status == 0

    run(tmp_path, story)


def test_scripted_input_without_a_pty_runs_line_by_line(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.admin) as conn:
            result = await conn.run(input="version --json\n\nnot_a_command\n")
        assert result.stdout == '{"version":"0.1.0"}\n'
        assert "unknown command 'not_a_command'" in str(result.stderr)
        assert result.exit_status == 2  # the status of the last command, as sh reports it

    run(tmp_path, story)


def test_keys_added_to_authorized_keys_work_without_a_restart_and_removed_ones_stop(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        newcomer = make_key(tmp_path / "keys", "newcomer")
        with pytest.raises(asyncssh.PermissionDenied):
            async with env.connect(newcomer):
                pass
        with env.authorized_keys.open("a") as handle:
            handle.write(f'role="readonly" {newcomer.public_line}\n')
        async with env.connect(newcomer) as conn:
            assert (await conn.run("version")).exit_status == 0
            assert (await conn.run("drop temp")).exit_status == 3  # as readonly, the line says

        env.authorized_keys.write_text(f'role="admin" {env.admin.public_line}\n')
        with pytest.raises(asyncssh.PermissionDenied):
            async with env.connect(env.readonly):
                pass

    run(tmp_path, story)


def test_connections_beyond_the_limit_are_closed(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.admin) as first:
            with pytest.raises((asyncssh.Error, OSError)):
                async with env.connect(env.admin):
                    pass
            assert (await first.run("version")).exit_status == 0

    run(tmp_path, story, max_connections=1)


def test_stopping_the_server_closes_sessions_and_audits_the_command_cut_short(tmp_path: Path) -> None:
    async def story(env: ShellServerEnv) -> None:
        async with env.connect(env.admin) as conn:
            process = await conn.create_process("ls")  # meta never answers: ls waits
            await asyncio.sleep(0.3)
            await env.server.stop()  # the meta stepped down
            await asyncio.wait_for(conn.wait_closed(), 10.0)
            assert process.exit_status is None  # no status: the connection went away first

        lines = [json.loads(line) for line in env.audit_log.read_text().splitlines()]
        (line,) = [line for line in lines if line["event"] == "command"]
        assert (line["command"], line["exit_status"]) == ("ls", 130)
        assert line["outcome"] == "interrupted: the connection closed"

    run(tmp_path, story)
