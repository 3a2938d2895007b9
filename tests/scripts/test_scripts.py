"""Golden PacificA transcripts: every file in testdata/ is a story with its expected output.

Run with REWRITE=1 to regenerate the expected blocks from the current behaviour; then READ the diff:
a golden file that records a wrong behaviour is a bug (the harness is in harness.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.scripts.harness import run_file

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


def test_there_are_enough_stories() -> None:
    assert len(SCRIPTS) >= 25


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_transcript(path: Path) -> None:
    rewritten, mismatches = run_file(path)
    if os.environ.get("REWRITE") == "1":
        path.write_text(rewritten)
        return
    assert not mismatches, "\n\n".join(mismatches)
