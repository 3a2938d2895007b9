"""The pure cores import nothing that does I/O (DESIGN.md section 2).

`core/` and `replication/pacifica/` take time as ticks and randomness as an injected object; if one
of their modules imports asyncio, the clock, the filesystem or a client library, this test names
the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pegasus_kv

FORBIDDEN = {
    "asyncio",
    "socket",
    "time",
    "random",
    "os",
    "io",
    "threading",
    "subprocess",
    "pathlib",
    "shutil",
    "selectors",
    "signal",
    "multiprocessing",
    "concurrent",
    "datetime",
    "tempfile",
    "rocksdict",
    "aiokafka",
    "boto3",
    "botocore",
    "asyncssh",
    "kazoo",
    "uvloop",
}
PURE_PACKAGES = ("core", "replication/pacifica")
PACKAGE_ROOT = Path(pegasus_kv.__file__).parent


def _imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _impure_imports(path: Path) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE_ROOT)}:{line} imports {name}"
        for line, name in _imports_of(path)
        if name.split(".")[0] in FORBIDDEN or (name.startswith("pegasus_kv.") and not _is_pure_module(name))
    ]


def _is_pure_module(dotted: str) -> bool:
    inner = dotted.removeprefix("pegasus_kv.").replace(".", "/")
    return any(inner == pure or inner.startswith(pure + "/") for pure in PURE_PACKAGES)


def test_pure_cores_import_no_io_modules() -> None:
    offenders: list[str] = []
    files = [f for pure in PURE_PACKAGES for f in sorted((PACKAGE_ROOT / pure).rglob("*.py"))]
    assert files, "the pure packages should hold modules"
    for path in files:
        offenders.extend(_impure_imports(path))
    assert offenders == [], "pure cores must not do I/O:\n" + "\n".join(offenders)


def test_the_checker_catches_an_io_import(tmp_path: Path) -> None:
    # The check itself must be able to fail: a module importing the clock is reported.
    sample = PACKAGE_ROOT / "core" / "ids.py"
    assert _impure_imports(sample) == []
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom asyncio import sleep\nfrom pegasus_kv.storage import store\n")
    names = [name for _, name in _imports_of(bad)]
    assert names == ["time", "asyncio", "pegasus_kv.storage"]
    assert all(n.split(".")[0] in FORBIDDEN or not _is_pure_module(n) for n in names)
