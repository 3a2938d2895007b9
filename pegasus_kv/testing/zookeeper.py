"""Start a throwaway ZooKeeper on loopback, for tests and onebox (DESIGN.md section 8).

    with ZooKeeperServer() as zookeeper:
        store = await ZooKeeperMetaStore.connect(zookeeper.hosts, "onebox")

It runs the Debian package's jars as a plain java process (`QuorumPeerMain` with a generated
configuration: standalone, 127.0.0.1, a free client port, a data directory of its own, the admin
HTTP server off) and waits until the server says it is serving (the `srvr` four-letter word, which
the generated configuration whitelists). Needs the Debian packages `zookeeper` (which brings
`libzookeeper-java` and a JRE via `default-jre`); set PEGASUS_KV_ZOOKEEPER_CLASSPATH to use other
jars and JAVA_HOME to pick a java.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
# Debian's zookeeper.jar names its dependencies in its manifest's Class-Path; slf4j-simple (from
# libslf4j-java, a dependency) makes the server's warnings and errors reach our log file.
JAR_DIRECTORIES = (Path("/usr/share/java"), Path("/usr/share/zookeeper"), Path("/usr/share/zookeeper/lib"))
INSTALL_HINT = "install the Debian package: apt-get install -y zookeeper (it brings a JRE)"


class ZooKeeperUnavailableError(RuntimeError):
    """ZooKeeper could not be started here; the message says why and what to install."""


def zookeeper_classpath() -> str:
    override = os.environ.get("PEGASUS_KV_ZOOKEEPER_CLASSPATH")
    if override:
        return override
    for directory in JAR_DIRECTORIES:
        server_jar = directory / "zookeeper.jar"
        if server_jar.is_file():
            logger_jar = directory / "slf4j-simple.jar"
            return os.pathsep.join(str(jar) for jar in (server_jar, logger_jar) if jar.is_file())
    searched = ", ".join(str(directory) for directory in JAR_DIRECTORIES)
    raise ZooKeeperUnavailableError(f"no zookeeper.jar in {searched}: {INSTALL_HINT}")


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ZooKeeperUnavailableError(f"no java on PATH: {INSTALL_HINT}")
    return java


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def four_letter_word(host: str, port: int, word: str, timeout_s: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command and return the whole answer ('' if none)."""
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        connection.sendall(word.encode())
        answer = bytearray()
        while len(answer) < 65536:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode(errors="replace")


def write_zookeeper_config(data_dir: Path, host: str, port: int, tick_time_ms: int = 500) -> Path:
    """Write DATA_DIR/zoo.cfg for a standalone server on host:port; returns its path."""
    config = data_dir / "zoo.cfg"
    config.write_text(
        "\n".join(
            [
                f"tickTime={tick_time_ms}",
                f"dataDir={data_dir / 'data'}",
                f"clientPort={port}",
                f"clientPortAddress={host}",
                "admin.enableServer=false",
                "4lw.commands.whitelist=srvr,ruok,stat",
                "maxClientCnxns=0",
                f"minSessionTimeout={2 * tick_time_ms}",
                "maxSessionTimeout=60000",
                "",
            ]
        )
    )
    return config


def zookeeper_command(java: str, classpath: str, config: Path, max_heap_mb: int = 256) -> list[str]:
    """The argv of a ZooKeeper server reading `config`."""
    return [
        java,
        f"-Xmx{max_heap_mb}m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",  # starts faster; a test ZooKeeper does little work
        "-Dzookeeper.admin.enableServer=false",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp",
        classpath,
        MAIN_CLASS,
        str(config),
    ]


def detached_zookeeper_command(config: Path) -> list[str]:
    """The argv onebox spawns as a detached process (its pid goes into onebox.json); raises
    ZooKeeperUnavailableError when java or the jars are missing."""
    return zookeeper_command(find_java(), zookeeper_classpath(), config)


class ZooKeeperServer:
    """One standalone ZooKeeper process on 127.0.0.1. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        startup_timeout_s: float = 30.0,
        tick_time_ms: int = 500,
        max_heap_mb: int = 256,
    ) -> None:
        self._requested_data_dir = None if data_dir is None else Path(data_dir)
        self._requested_port = port
        self.startup_timeout_s = startup_timeout_s
        self.tick_time_ms = tick_time_ms
        self.max_heap_mb = max_heap_mb
        self.host = "127.0.0.1"
        self.port = 0
        self.data_dir: Path | None = None
        self._owns_data_dir = False
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        """The connection string for kazoo and the meta server's configuration."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        if self.data_dir is None:
            raise RuntimeError("the ZooKeeper server was never started")
        return self.data_dir / "zookeeper.log"

    def start(self) -> ZooKeeperServer:
        """Start the server and wait until it serves; raises ZooKeeperUnavailableError otherwise."""
        if self._process is not None:
            raise RuntimeError("the ZooKeeper server is already running")
        java = find_java()
        classpath = zookeeper_classpath()
        if self._requested_data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="pegasus-kv-zookeeper-"))
            self._owns_data_dir = True
        else:
            self.data_dir = self._requested_data_dir
            self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._requested_port else 3  # a free port can be taken between probe and bind
        for attempt in range(attempts):
            self.port = self._requested_port or free_port()
            try:
                self._launch(java, classpath)
                return self
            except ZooKeeperUnavailableError:
                self._terminate()
                if attempt == attempts - 1 or "Address already in use" not in self._log_tail():
                    self._remove_data_dir()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, java: str, classpath: str) -> None:
        assert self.data_dir is not None
        config = write_zookeeper_config(self.data_dir, self.host, self.port, self.tick_time_ms)
        command = zookeeper_command(java, classpath, config, self.max_heap_mb)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ZooKeeperUnavailableError(
                    f"ZooKeeper exited with status {self._process.returncode} while starting; "
                    f"{self.log_path} ends with:\n{self._log_tail()}"
                )
            if self.is_serving():
                return
            time.sleep(0.05)
        raise ZooKeeperUnavailableError(
            f"ZooKeeper did not serve on {self.hosts} within {self.startup_timeout_s} s; "
            f"{self.log_path} ends with:\n{self._log_tail()}"
        )

    def is_serving(self) -> bool:
        try:
            return "Mode: standalone" in four_letter_word(self.host, self.port, "srvr")
        except OSError:
            return False

    def _log_tail(self, max_bytes: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-max_bytes:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove a data directory it created."""
        self._terminate()
        self._remove_data_dir()

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _remove_data_dir(self) -> None:
        if self._owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._owns_data_dir = False

    def __enter__(self) -> ZooKeeperServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # A forgotten server must not outlive the test run that started it.
        with contextlib.suppress(Exception):
            self._terminate()


def expire_session(hosts: str, client_id: tuple[int, bytes], timeout_s: float = 10.0) -> None:
    """Fault injection: make ZooKeeper expire a client's session, as a long pause or partition would.

    A second connection that presents the same session id and password and then closes makes the
    server end that session: its ephemeral znodes (election nodes) vanish, and the original client
    learns on its next contact that its session is lost.
    """
    from kazoo.client import KazooClient  # only the fault-injecting tests need it

    impostor = KazooClient(hosts=hosts, client_id=client_id, timeout=timeout_s)
    impostor.start(timeout=timeout_s)
    try:
        impostor.stop()
    finally:
        impostor.close()
