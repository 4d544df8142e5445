"""Topic names and Redis keys: every topic is distinct and legal for Kafka, and every live-state key
sits in the one Redis Cluster slot its scripts need, whatever id it is built from."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from contracts import topics
from contracts.kinds import KINDS

LIVE_SLOT = key_slot(b"live")
FIXED_LIVE_KEYS = (
    topics.LIVE_EPOCH_KEY,
    topics.LIVE_MOVED_KEY,
    topics.LIVE_COPYING_KEY,
    topics.LIVE_BUSY_KEY,
)
BUILDERS = (topics.responder_key, topics.available_key, topics.grid_workers_key, topics.camera_key)
ids = st.text(min_size=1, max_size=40)


def test_every_pipeline_topic_is_a_distinct_legal_kafka_name() -> None:
    names = topics.PIPELINE_TOPICS
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,249}", n) for n in names)
    # Kafka treats '.' and '_' alike in metric names: two topics differing only there collide.
    assert len({n.replace(".", "_") for n in names}) == len(names)
    declared = {v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert declared | {topics.DEADLETTER} == set(names)  # every topic constant is created


def test_the_dispatcher_group_is_not_a_topic() -> None:
    assert topics.DISPATCHER_GROUP not in topics.PIPELINE_TOPICS


@given(responder=ids, grid=ids, kind=st.sampled_from(KINDS))
def test_every_live_key_sits_in_the_live_slot_whatever_the_id(responder: str, grid: str, kind: str) -> None:
    keys = (topics.responder_key(responder), topics.available_key(kind), topics.grid_workers_key(grid))
    assert {key_slot(k.encode()) for k in (*keys, *FIXED_LIVE_KEYS)} == {LIVE_SLOT}


@given(st.lists(ids, min_size=2, max_size=2, unique=True))
def test_keys_of_different_ids_or_builders_never_collide(two: list[str]) -> None:
    a, b = two
    built = [build(x) for build in BUILDERS for x in (a, b)]
    assert len(set(built)) == len(built)
    assert set(built).isdisjoint(FIXED_LIVE_KEYS)
    assert len(set(FIXED_LIVE_KEYS)) == len(FIXED_LIVE_KEYS)


@given(ids)
def test_a_camera_key_is_read_by_name_outside_the_live_slot(camera: str) -> None:
    key = topics.camera_key(camera)
    assert key.startswith("camera:") and key.endswith(camera) and not key.startswith(topics.LIVE_SLOT)
