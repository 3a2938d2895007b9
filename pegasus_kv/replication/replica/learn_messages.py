"""Messages between replica servers that the replica core does not define (wire type ids 150-169).

- `ReplicaEnvelope`: every replica<->replica message of messages.py travels inside one, so the
  receiver knows the sender's ADVERTISED address (the core identifies nodes by it; the TCP peer
  address is an ephemeral port, DESIGN.md section 1). It goes as a one-way frame: the protocol has
  its own acknowledgements (PrepareAck, GroupCheckAck, LearnResponse) and timeouts.
- Checkpoint transfer (learning, PacificA "adding a replica"): the learner got a LearnResponse of
  kind CHECKPOINT naming `checkpoint_ref` on the primary's server. It asks for the checkpoint's
  manifest (file names, sizes, CRC-32 of each file), then fetches every file in chunks of at most
  `max_bytes` (each chunk carries its own CRC-32), verifies sizes and checksums, and installs the
  copy as its store. Requests are ordinary request/response calls, so a slow learner is paced by
  its own fetching and never makes the primary buffer a whole checkpoint.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from pegasus_kv.core.ids import Gpid
from pegasus_kv.core.registry import Message, message
from pegasus_kv.replication.pacifica.messages import (
    MAX_CHECKPOINT_REF_BYTES,
    GroupCheck,
    GroupCheckAck,
    LearnCompletionNotice,
    LearnRequest,
    LearnResponse,
    Prepare,
    PrepareAck,
)

# A RocksDB checkpoint holds a few dozen files normally; a few thousand SSTs at most.
MAX_CHECKPOINT_FILES = 100_000
MAX_FILE_NAME_CHARS = 255
MAX_ADDRESS_CHARS = 1024
# One chunk of a checkpoint file (the frame limit is 16 MiB).
MAX_CHUNK_BYTES = 8 * 1024 * 1024

CheckpointRef = Annotated[str, msgspec.Meta(max_length=MAX_CHECKPOINT_REF_BYTES)]
FileName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FILE_NAME_CHARS)]


@message
class ReplicaEnvelope(Message, tag=150):
    """A replica message (messages.py) and the advertised address of the server that sent it."""

    sender: Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS_CHARS)]
    message: (
        Prepare
        | PrepareAck
        | GroupCheck
        | GroupCheckAck
        | LearnRequest
        | LearnResponse
        | LearnCompletionNotice
    )


class CheckpointFile(msgspec.Struct, array_like=True, frozen=True):
    name: FileName
    size_bytes: int
    crc32: int  # zlib.crc32 of the whole file


@message
class CheckpointManifestRequest(Message, tag=151):
    gpid: Gpid
    checkpoint_ref: CheckpointRef


@message
class CheckpointManifestResponse(Message, tag=152):
    checkpoint_decree: int
    files: Annotated[list[CheckpointFile], msgspec.Meta(max_length=MAX_CHECKPOINT_FILES)]


@message
class CheckpointChunkRequest(Message, tag=153):
    gpid: Gpid
    checkpoint_ref: CheckpointRef
    file_name: FileName
    offset: int
    max_bytes: int


@message
class CheckpointChunkResponse(Message, tag=154):
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_CHUNK_BYTES)]
    crc32: int  # zlib.crc32 of data


LEARN_REQUEST_TYPES: tuple[type[Message], ...] = (CheckpointManifestRequest, CheckpointChunkRequest)
