"""The request latency histograms: what a scrape shows after some requests, and their bounds."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from pegasus_kv.core.errors import BusyError, NotPrimaryError
from pegasus_kv.core.invariants import InvariantViolation
from pegasus_kv.core.messages import CheckAndSetRequest, GetRequest, MultiSetRequest, SetRequest
from pegasus_kv.metrics.labels import error_code_label, op_label
from pegasus_kv.metrics.latency import OVERFLOW_LABEL, LatencyFamily
from tests.unit.metrics_support import rendered, value

NAME = "pegasus_test_request_duration_seconds"


def test_operations_and_errors_are_labelled_by_their_domain_names() -> None:
    assert op_label(SetRequest) == "set"
    assert op_label(GetRequest) == "get"
    assert op_label(MultiSetRequest) == "multi_set"
    assert op_label(CheckAndSetRequest) == "check_and_set"
    assert error_code_label(BusyError("queue full")) == "busy"
    assert error_code_label(NotPrimaryError()) == "not_primary"
    assert error_code_label(RuntimeError("a bug")) == "internal"


def test_a_scrape_shows_cumulative_buckets_count_and_sum_per_operation_and_table() -> None:
    family = LatencyFamily(NAME, "test", ("op", "table"), buckets_s=(0.001, 0.01, 0.1))
    registry = CollectorRegistry()
    registry.register(family)
    sets = family.series(("set", "temp"))
    for seconds in (0.0005, 0.001, 0.005, 0.05, 3.0):  # 0.001 is on a bound: "le" includes it
        sets.observe(seconds)
    family.series(("get", "temp")).observe(0.0002)
    assert family.series(("set", "temp")) is sets  # bound once, reused

    samples = rendered(registry)
    buckets = {
        le: value(samples, f"{NAME}_bucket", op="set", table="temp", le=le)
        for le in ("0.001", "0.01", "0.1", "+Inf")
    }
    assert buckets == {"0.001": 2, "0.01": 3, "0.1": 4, "+Inf": 5}
    assert value(samples, f"{NAME}_count", op="set", table="temp") == 5
    assert math.isclose(value(samples, f"{NAME}_sum", op="set", table="temp"), 3.0565)
    assert value(samples, f"{NAME}_count", op="get", table="temp") == 1


def test_past_the_series_bound_new_label_values_share_one_overflow_series() -> None:
    family = LatencyFamily(NAME, "test", ("op", "table"), max_series=2)
    family.series(("set", "a")).observe(0.001)
    family.series(("set", "b")).observe(0.001)
    overflow = family.series(("set", "c"))
    assert family.series(("get", "d")) is overflow
    overflow.observe(0.002)
    assert len(family) == 3
    registry = CollectorRegistry()
    registry.register(family)
    assert value(rendered(registry), f"{NAME}_count", op=OVERFLOW_LABEL, table=OVERFLOW_LABEL) == 1


def test_buckets_must_increase() -> None:
    with pytest.raises(InvariantViolation):
        LatencyFamily(NAME, "test", ("op",), buckets_s=(0.1, 0.01))
