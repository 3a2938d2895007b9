"""Finding the next valid record in a damaged stretch of a record file.

The meta server's record file, each replica's mutation log and the replica server's shared log all
frame records behind a 4-byte magic and check them with a CRC. After a scan stops at a bad record,
each asks the same question: is there a valid record anywhere after it? If so the damage is not a
torn tail (a crash mid-write only leaves garbage at the very end), and acknowledged data is gone.
"""

from __future__ import annotations

from collections.abc import Callable


def first_valid_offset(
    data: bytes, start: int, magic: bytes, parse: Callable[[bytes, int], object | None]
) -> int | None:
    """The first offset at or after `start` where `magic` begins a record that `parse(data, offset)`
    accepts (returns anything but None), or None when there is none."""
    position = data.find(magic, max(start, 0))
    while position != -1:
        if parse(data, position) is not None:
            return position
        position = data.find(magic, position + 1)
    return None
