"""Configuration proposals from primaries: a compare-and-set on the ballot (PacificA section 3)."""

from __future__ import annotations

from pegasus_kv.core.ids import Gpid
from pegasus_kv.replication.pacifica.config import ConfigType, PartitionConfiguration
from pegasus_kv.replication.pacifica.meta_requests import SetMetaLevelRequest
from pegasus_kv.replication.pacifica.meta_types import MetaLevel

from .meta_harness import N1, N2, N3, N4, MetaHarness, proposal_response


def _full_group(nodes: tuple[str, ...] = (N1, N2, N3)) -> tuple[MetaHarness, PartitionConfiguration]:
    meta = MetaHarness(nodes)
    app_id = meta.create_table("temp", partition_count=1)
    meta.fill_groups(app_id)
    return meta, meta.config(Gpid(app_id, 0))


def test_the_primary_drops_a_secondary_that_stopped_acking() -> None:
    meta, config = _full_group()
    victim = config.secondaries[0]
    token, ready = meta.propose(config, ConfigType.DOWNGRADE_TO_INACTIVE, victim)

    # Persisted first, answered after: the reply waits in replies_after_persist.
    assert ready.replies == () and len(ready.persist) == 1 and len(ready.replies_after_persist) == 1
    response = proposal_response(meta, token)
    assert response.accepted
    assert response.config.ballot == config.ballot + 1
    assert victim not in response.config.members and response.config.last_drops[-1] == victim
    assert meta.config(config.gpid) == response.config


def test_a_proposal_made_against_an_old_ballot_is_refused_with_the_current_configuration() -> None:
    meta, config = _full_group()
    token, _ = meta.propose(config, ConfigType.DOWNGRADE_TO_INACTIVE, config.secondaries[0])
    assert proposal_response(meta, token).accepted
    current = meta.config(config.gpid)

    token, ready = meta.propose(config, ConfigType.DOWNGRADE_TO_INACTIVE, config.secondaries[1])

    assert ready.persist == ()
    response = proposal_response(meta, token)
    assert not response.accepted
    assert "stale ballot" in response.reason
    assert response.config == current
    assert meta.config(config.gpid) == current


def test_two_conflicting_proposals_against_one_ballot_only_one_wins_even_before_persistence() -> None:
    meta, config = _full_group()
    meta.auto_persist = False
    first, second = config.secondaries

    token_a, _ = meta.propose(config, ConfigType.DOWNGRADE_TO_INACTIVE, first)
    token_b, ready_b = meta.propose(config, ConfigType.DOWNGRADE_TO_INACTIVE, second)

    # The loser is answered at once; the winner only once its change is durable.
    assert ready_b.persist == () and meta.replies_to(token_a) == []
    refused = proposal_response(meta, token_b)
    assert not refused.accepted and "busy" in refused.reason
    assert refused.config == config  # the durable configuration: the pending one is never shown
    meta.persist()
    assert proposal_response(meta, token_a).accepted
    final = meta.config(config.gpid)
    assert first not in final.members and second in final.members
    assert final.ballot == config.ballot + 1


def test_only_the_current_primary_may_propose() -> None:
    meta, config = _full_group()
    impostor = PartitionConfiguration(
        gpid=config.gpid,
        ballot=config.ballot,
        primary=config.secondaries[0],
        secondaries=(config.primary or "", config.secondaries[1]),
    )
    token, _ = meta.propose(impostor, ConfigType.DOWNGRADE_TO_INACTIVE, config.secondaries[1])
    response = proposal_response(meta, token)
    assert not response.accepted and "only the current primary" in response.reason


def test_proposals_that_do_not_fit_the_group_are_refused_with_a_reason() -> None:
    meta, config = _full_group((N1, N2, N3, N4))
    primary = config.primary
    assert primary is not None
    spare = next(n for n in (N1, N2, N3, N4) if n not in config.members)
    cases = [
        (ConfigType.DOWNGRADE_TO_INACTIVE, primary, "cannot remove itself"),
        (ConfigType.DOWNGRADE_TO_INACTIVE, spare, "not a secondary"),
        (ConfigType.UPGRADE_TO_SECONDARY, config.secondaries[0], "already a member"),
        (ConfigType.UPGRADE_TO_SECONDARY, spare, "group is full"),
        (ConfigType.DOWNGRADE_TO_SECONDARY, config.secondaries[0], "only the primary steps down"),
        (ConfigType.UPGRADE_TO_PRIMARY, config.secondaries[0], "not a change a replica may propose"),
        (ConfigType.ASSIGN_PRIMARY, spare, "not a change a replica may propose"),
    ]
    for config_type, node, reason in cases:
        token, ready = meta.propose(config, config_type, node)
        response = proposal_response(meta, token)
        assert not response.accepted, (config_type, node)
        assert reason in response.reason, (config_type, node, response.reason)
        assert ready.persist == ()
    assert meta.config(config.gpid) == config


def test_a_learner_on_an_unknown_or_dead_node_is_not_upgraded() -> None:
    meta = MetaHarness((N1, N2, N3))
    app_id = meta.create_table("temp", partition_count=1, replica_count=3)
    meta.advance(1)
    config = meta.config(Gpid(app_id, 0))
    token, _ = meta.propose(config, ConfigType.UPGRADE_TO_SECONDARY, "stranger:1")
    assert "unknown node" in proposal_response(meta, token).reason
    learner = next(n for n in (N1, N2, N3) if n != config.primary)
    meta.stop(learner)
    meta.advance(7)
    config = meta.config(Gpid(app_id, 0))
    token, _ = meta.propose(config, ConfigType.UPGRADE_TO_SECONDARY, learner)
    assert "declared dead" in proposal_response(meta, token).reason


def test_a_frozen_meta_accepts_only_downgrades_and_a_blind_one_nothing() -> None:
    meta, config = _full_group((N1, N2, N3, N4))
    spare = next(n for n in (N1, N2, N3, N4) if n not in config.members)
    meta.request(SetMetaLevelRequest(level=MetaLevel.FREEZED))
    token, _ = meta.propose(config, ConfigType.DOWNGRADE_TO_INACTIVE, config.secondaries[0])
    assert proposal_response(meta, token).accepted
    shrunk = meta.config(config.gpid)
    token, _ = meta.propose(shrunk, ConfigType.UPGRADE_TO_SECONDARY, spare)
    response = proposal_response(meta, token)
    assert not response.accepted and "only downgrades" in response.reason

    meta.request(SetMetaLevelRequest(level=MetaLevel.BLIND))
    token, _ = meta.propose(shrunk, ConfigType.DOWNGRADE_TO_INACTIVE, shrunk.secondaries[0])
    response = proposal_response(meta, token)
    assert not response.accepted and "BLIND" in response.reason
