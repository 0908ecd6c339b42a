"""Records of their own shape mapped onto streamapp's messages (streamapp/mapping.py)."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp import records
from streamapp.mapping import Mapping
from streamapp.records import BadEvent, Event, LateLabel, Limits
from streamapp.settings import ConfigError, Settings

LIMITS = Limits()
BANK = {
    "STREAMAPP_ID_FIELD": "txn_id",
    "STREAMAPP_LABEL_FIELD": "is_fraud",
    "STREAMAPP_FEATURES": "amount,merchant,device.os,device.trusted",
    "STREAMAPP_TIMESTAMP_FIELD": "event_time",
    "STREAMAPP_TIMESTAMP_UNIT": "ms",
}


def mapping(**env: str) -> Mapping:
    return Mapping.from_settings(Settings.from_env(env))


def bank_record(**changes: Any) -> dict[str, Any]:
    record = {
        "txn_id": 981273,
        "card_id": "c-17",
        "amount": 42.5,
        "merchant": "grocery",
        "device": {"os": "ios", "trusted": True},
        "event_time": 1_790_000_000_123,
        "is_fraud": None,
    }
    return {**record, **changes}


def test_the_defaults_are_streamapps_own_contract() -> None:
    assert Mapping.from_settings(Settings()).is_contract
    assert Mapping.from_settings(Settings(timestamp_field="ts")).is_contract
    assert not mapping(STREAMAPP_LABEL_FIELD="is_fraud").is_contract


def test_a_bank_record_by_its_own_field_names() -> None:
    event = mapping(**BANK).message(bank_record(), 120, LIMITS)
    assert isinstance(event, Event)
    assert (event.id, event.y, event.size) == ("981273", None, 120)
    assert event.x == {"amount": 42.5, "merchant": "grocery", "device.os": "ios", "device.trusted": True}
    assert event.ts == pytest.approx(1_790_000_000.123)
    labelled = mapping(**BANK).message(bank_record(is_fraud=True), 1, LIMITS)
    assert isinstance(labelled, Event) and labelled.y is True


def test_null_and_absent_fields_are_missing_values() -> None:
    record = bank_record(merchant=None, device={"os": "android"})  # trusted absent
    event = mapping(**BANK).message(record, 1, LIMITS)
    assert isinstance(event, Event) and event.x == {"amount": 42.5, "device.os": "android"}
    untimed = mapping(**BANK).message(bank_record(event_time=None), 1, LIMITS)
    assert isinstance(untimed, Event) and untimed.ts is None  # the Kafka timestamp is its time


def test_avro_values_become_features() -> None:
    event = mapping(**BANK).message(bank_record(amount=decimal.Decimal("12.34")), 1, LIMITS)
    assert isinstance(event, Event) and event.x["amount"] == 12.34


def test_a_record_of_only_id_label_and_time_is_a_late_label() -> None:
    label = mapping(**BANK).message({"txn_id": "t1", "is_fraud": False, "event_time": 5000}, 1, LIMITS)
    assert label == LateLabel("t1", False, 5.0)
    # Any other field makes it an event (with that label).
    event = mapping(**BANK).message({"txn_id": "t1", "is_fraud": False, "amount": 3}, 1, LIMITS)
    assert isinstance(event, Event)


def test_every_field_but_id_label_time_and_excluded_ones() -> None:
    m = mapping(**{**BANK, "STREAMAPP_FEATURES": "", "STREAMAPP_EXCLUDE": "card_id,device.trusted"})
    event = m.message(bank_record(is_fraud=False), 1, LIMITS)
    assert isinstance(event, Event)
    assert event.x == {"amount": 42.5, "merchant": "grocery", "device.os": "ios"}
    assert event.y is False


def test_star_takes_an_objects_fields_under_their_own_names() -> None:
    m = mapping(STREAMAPP_FEATURES="device.*,amount", STREAMAPP_ID_FIELD="txn_id")
    event = m.message(bank_record(), 1, LIMITS)
    assert isinstance(event, Event) and event.x == {"os": "ios", "trusted": True, "amount": 42.5}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (bank_record(txn_id=None), "missing 'txn_id' (the id, STREAMAPP_ID_FIELD)"),
        (bank_record(txn_id=""), "'txn_id' (the id) must be a non-empty string"),
        (bank_record(txn_id=True), "'txn_id' (the id) must be a non-empty string"),
        (bank_record(amount=[1, 2]), "field 'amount' is list, not a number, string or boolean"),
        (bank_record(device={"os": {"name": "ios"}}), "field 'device.os' is an object"),
        (bank_record(amount=float("nan")), "non-finite number in feature 'amount'"),
        (bank_record(is_fraud=[True]), "'is_fraud' must be a boolean, number or string, got list"),
        (bank_record(event_time="yesterday"), "'event_time' is not an ISO 8601 time"),
        (bank_record(event_time=True), "'event_time' must be a time"),
        ([1, 2], "the record is list, not an object of fields"),
    ],
)
def test_a_record_that_does_not_fit_says_why(record: Any, reason: str) -> None:
    with pytest.raises(BadEvent, match=None) as refused:
        mapping(**BANK).message(record, 1, LIMITS)
    assert reason in str(refused.value)


def test_record_times_from_avro_and_iso_text() -> None:
    m = mapping(**{**BANK, "STREAMAPP_TIMESTAMP_UNIT": "s"})
    aware = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    for value in (aware, "2026-11-30T12:00:00Z", "2026-11-30T12:00:00", aware.timestamp()):
        event = m.message(bank_record(event_time=value), 1, LIMITS)
        assert isinstance(event, Event) and event.ts == aware.timestamp(), value


def double_amount(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "amount": record["amount"] * 2}


def broken(record: dict[str, Any]) -> dict[str, Any]:
    raise KeyError("no such field")


def test_a_transform_runs_before_the_mapping_and_its_failure_is_the_records() -> None:
    m = mapping(**BANK, STREAMAPP_TRANSFORM=f"{__name__}:double_amount")
    event = m.message(bank_record(), 1, LIMITS)
    assert isinstance(event, Event) and event.x["amount"] == 85.0
    with pytest.raises(BadEvent, match="STREAMAPP_TRANSFORM raised KeyError"):
        mapping(**BANK, STREAMAPP_TRANSFORM=f"{__name__}:broken").message(bank_record(), 1, LIMITS)


def test_a_transform_that_cannot_be_imported_fails_at_start() -> None:
    with pytest.raises(ConfigError, match=r"STREAMAPP_TRANSFORM .no\.such:thing.: cannot import"):
        mapping(STREAMAPP_TRANSFORM="no.such:thing")
    with pytest.raises(ConfigError, match="not an import path"):
        mapping(STREAMAPP_TRANSFORM="just_a_name")


def test_a_labels_topic_record_is_only_ever_a_label() -> None:
    m = mapping(**BANK)
    assert m.late_label({"txn_id": 7, "is_fraud": True, "analyst": "ab"}, LIMITS) == LateLabel(
        "7", True, None
    )
    with pytest.raises(BadEvent, match="without a label"):
        m.late_label({"txn_id": 7, "analyst": "ab"}, LIMITS)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMAPP_INPUT_FORMAT": "avro"}, "needs STREAMAPP_SCHEMA_REGISTRY_URL"),
        ({"STREAMAPP_FEATURES": "a", "STREAMAPP_EXCLUDE": "b"}, "EXCLUDE only applies"),
        ({"STREAMAPP_ID_FIELD": "k", "STREAMAPP_LABEL_FIELD": "k"}, "must name different fields"),
        ({"STREAMAPP_LABELS_TOPIC": "events"}, "is another of streamapp's topics"),
        (
            {"STREAMAPP_SCHEMA_REGISTRY_URL": "http://r:8081", "STREAMAPP_SCHEMA_REGISTRY_USERNAME": "k"},
            "go together",
        ),
        (
            {
                "STREAMAPP_SCHEMA_REGISTRY_URL": "http://r:8081",
                "STREAMAPP_SCHEMA_REGISTRY_USERNAME": "k",
                "STREAMAPP_SCHEMA_REGISTRY_PASSWORD": "s",
            },
            "in clear; use https",
        ),
        ({"STREAMAPP_SCHEMA_REGISTRY_URL": "registry:8081"}, "is not an http(s) URL"),
        ({"STREAMAPP_FEATURES": "a..b"}, "is not a field path"),
    ],
)
def test_bad_input_settings_fail_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert message in str(refused.value)


# -- properties -------------------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_characters="."), min_size=1, max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=4),
    max_leaves=12,
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "STREAMAPP_ID_FIELD": st.sampled_from(["id", "a", "a.b"]),
        "STREAMAPP_LABEL_FIELD": st.sampled_from(["y", "label", "c.d"]),
        "STREAMAPP_FEATURES": st.sampled_from(["", "x.*", "a,b.c", "b.*,e"]),
        "STREAMAPP_TIMESTAMP_FIELD": st.sampled_from(["", "t", "b.t"]),
    },
)


@settings(max_examples=400, deadline=None)
@given(env=configs, doc=st.dictionaries(names, json_like, max_size=6))
def test_any_record_is_a_message_or_a_reason_never_an_exception(env: dict[str, str], doc: Any) -> None:
    try:
        m = mapping(**env)
    except ConfigError:
        return  # two settings naming one field: refused at start
    try:
        message = m.message(doc, 1, LIMITS)
    except BadEvent as exc:
        assert str(exc)
        return
    if isinstance(message, Event):
        assert records.features(message.x, LIMITS) is message.x  # within every bound
    else:
        assert isinstance(message, LateLabel) and message.y is not None


contract_x = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.booleans() | st.integers(-(10**12), 10**12) | st.floats(-1e12, 1e12) | st.text(max_size=10),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(
    event_id=st.text(min_size=1, max_size=12),
    x=contract_x,
    y=st.none() | st.booleans() | st.integers(0, 5),
)
def test_the_generic_mapping_reads_the_contract_as_records_parse_does(
    event_id: str, x: dict[str, Any], y: Any
) -> None:
    doc = {"id": event_id, "x": x, **({} if y is None else {"y": y})}
    raw = orjson.dumps(doc)
    contract = records.parse(raw, LIMITS)
    generic = Mapping().message(orjson.loads(raw), len(raw), LIMITS)
    assert generic == contract
    if y is not None:
        late = orjson.dumps({"id": event_id, "y": y})
        assert Mapping().message(orjson.loads(late), len(late), LIMITS) == records.parse(late, LIMITS)
