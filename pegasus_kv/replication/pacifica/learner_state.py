"""What a replica keeps only while it is a learner (potential secondary).

Pure bookkeeping; replica.py owns every transition.
"""

from __future__ import annotations

import dataclasses
import enum

from pegasus_kv.core.mutation import Mutation
from pegasus_kv.replication.pacifica.config import NodeAddress


class LearnerPhase(enum.IntEnum):
    REQUESTING = 0  # a LearnRequest is out (or will be sent when the learn timeout fires)
    INSTALLING = 1  # the runtime is copying and installing a checkpoint
    COMPLETE = 2  # holds everything before prepare_start_decree durably; waiting for the upgrade


@dataclasses.dataclass(slots=True)
class LearnerState:
    primary: NodeAddress
    signature: int
    attempt: int
    phase: LearnerPhase = LearnerPhase.REQUESTING
    # Known from the first LearnResponse of the attempt (0 until then).
    prepare_start_decree: int = 0
    # Prepares received from the primary that cannot join the prepare list yet (learning has not
    # reached them). Persisted and acknowledged on receipt; bounded by the prepare list capacity.
    held: dict[int, Mutation] = dataclasses.field(default_factory=dict)
    last_request_tick: int = 0
    # The InstallCheckpoint in flight (0: none) and the decree its checkpoint stands at.
    install_request_id: int = 0
    install_decree: int = 0
    # The checkpoint this attempt installed (-1: none), to recognise a duplicated answer.
    installed_checkpoint_decree: int = -1
