"""How the dispatcher spreads one fetch over lanes: one writer per incident, fetch order kept."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.main import Dispatcher, into_lanes
from infra.settings import Settings
from streams import topics


def record(topic: str, partition: int, offset: int, key: str) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 0, 0, key.encode(), b"{}", None, 0, 0, [])


fetches = st.lists(
    st.tuples(
        st.sampled_from([topics.INCIDENTS_ENRICHED, topics.INCIDENTS_COMMANDS]),
        st.integers(0, 3),
        st.sampled_from([f"INC-{i}" for i in range(12)]),
    ),
    max_size=60,
)


def as_batches(fetch: list[tuple[str, int, str]]) -> dict[TopicPartition, list[ConsumerRecord]]:
    batches: dict[TopicPartition, list[ConsumerRecord]] = {}
    for offset, (topic, partition, key) in enumerate(fetch):
        batches.setdefault(TopicPartition(topic, partition), []).append(record(topic, partition, offset, key))
    return batches


@given(fetches, st.integers(1, 8))
def test_every_record_is_in_one_lane_with_every_record_of_its_incident_in_order(
    fetch: list[tuple[str, int, str]], n: int
) -> None:
    batches = as_batches(fetch)
    lanes = into_lanes(batches, n)
    assert len(lanes) <= n
    laid = [r for lane in lanes.values() for r in lane]
    assert sorted((r.topic, r.partition, r.offset) for r in laid) == sorted(
        (r.topic, r.partition, r.offset) for rs in batches.values() for r in rs
    )
    lane_of = {r.key: i for i, lane in lanes.items() for r in lane}
    for i, lane in lanes.items():
        assert all(lane_of[r.key] == i for r in lane)  # an incident has one lane
        for tp in batches:  # each partition's records keep their order
            mine = [r.offset for r in lane if (r.topic, r.partition) == (tp.topic, tp.partition)]
            assert mine == sorted(mine)


def test_a_fetch_of_many_incidents_is_spread_over_the_lanes() -> None:
    fetch = [(topics.INCIDENTS_ENRICHED, 0, f"INC-{i}") for i in range(200)]
    lanes = into_lanes(as_batches(fetch), 8)
    assert len(lanes) == 8 and all(len(lane) > 10 for lane in lanes.values())
    assert into_lanes(as_batches(fetch), 1).keys() == {0}


def test_no_lanes_is_refused_by_name_before_anything_connects() -> None:
    for lanes in (0, -3):
        with pytest.raises(ValueError, match=f"DISPATCHER_LANES={lanes}: expected 1 or more"):
            Dispatcher(Settings(dispatcher_lanes=lanes))
