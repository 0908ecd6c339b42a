"""Every way an event can be wrong has its own reason; good events decode to what was sent."""

import orjson
import pytest

from streamapp import records
from streamapp.records import BadEvent, Event, LateLabel

LIMIT = records.Limits(max_event_bytes=1024, max_features=4, max_name_length=8, max_abs_number=1e6)


def test_good_event_with_label() -> None:
    raw = orjson.dumps(
        {"id": "a", "x": {"amount": 1.5, "cat": "fuel", "online": True, "n": 3}, "y": True, "ts": 1.0}
    )
    assert records.parse(raw, LIMIT) == Event(
        "a", {"amount": 1.5, "cat": "fuel", "online": True, "n": 3}, True, 1.0
    )


def test_unlabelled_event_and_late_label() -> None:
    assert records.parse(b'{"id": "a", "x": {"f": 1}}', LIMIT) == Event("a", {"f": 1}, None, None)
    assert records.parse(b'{"id": "a", "y": 0}', LIMIT) == LateLabel("a", 0)


def test_extra_top_level_fields_are_ignored() -> None:
    assert records.parse(b'{"id": "a", "x": {}, "entity": "card-1"}', LIMIT) == Event("a", {}, None, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty message"),
        (b"x" * (LIMIT.max_event_bytes + 1), "oversized"),
        (b'{"id": "a", "x": {"f": 1, "g": 2, "h": 3, "i": 4, "j": 5}}', "5 features, over 4"),
        (b'{"id": "a", "x": {"longer-than-8": 1}}', "a feature name is 13 characters, over 8"),
        (b'{"id": "a", "x": {"f": "longer-than-8"}}', "feature 'f' is 13 characters"),
        (b'{"id": "a", "x": {"f": 1e7}}', "out of range: |1e+07| > 1e+06"),
        (b'{"id": "a", "x": {"f": -10000000}}', "out of range"),
        (b'{"id": "a", "x": {"f": 1}, "y": 2e6}', "number in 'y' out of range"),
        (b'{"id": "a", "x": {"f": 1}, "y": "longer-than-8"}', "'y' is 13 characters"),
        (b'{"id": "longer-than-8", "x": {"f": 1}}', "'id' is 13 characters"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"id": "a", "x": {"f": NaN}}', "non-finite number NaN"),
        (b'{"id": "a", "x": {"f": Infinity}}', "non-finite number Infinity"),
        (b'{"id": "a", "x": {"f": -Infinity}}', "non-finite number -Infinity"),
        (b'{"id": "a", "x": {"f": 1e999}}', "non-finite number"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'{"x": {"f": 1}}', "missing 'id'"),
        (b'{"id": 7, "x": {"f": 1}}', "'id' must be a non-empty string"),
        (b'{"id": "", "x": {"f": 1}}', "'id' must be a non-empty string"),
        (b'{"id": "a"}', "missing 'x'"),
        (b'{"id": "a", "x": [1]}', "'x' must be an object"),
        (b'{"id": "a", "x": {"f": null}}', "feature 'f' must be a number, string or boolean, got null"),
        (b'{"id": "a", "x": {"f": {"g": 1}}}', "got dict"),
        (b'{"id": "a", "x": {"f": 1}, "y": [1]}', "'y' must be a boolean, number or string"),
        (b'{"id": "a", "x": {"f": 1}, "ts": "now"}', "'ts' must be a finite number"),
    ],
)
def test_bad_events_name_their_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(BadEvent) as err:
        records.parse(raw, LIMIT)
    assert reason in str(err.value)


def test_nesting_deeper_than_the_stack_is_refused_not_raised() -> None:
    """orjson stops at 1,024 levels; the standard library's parser must not raise RecursionError."""
    deep = b'{"id": "a", "x": ' + b'{"f": ' * 10_000 + b"1" + b"}" * 10_001
    with pytest.raises(BadEvent, match="not JSON"):
        records.parse(deep, records.Limits(max_event_bytes=1 << 20))


def test_the_bounds_admit_what_they_name() -> None:
    raw = b'{"id": "abcdefgh", "x": {"abcdefgh": "abcdefgh", "g": -1e6, "h": true, "i": 1}, "y": 1e6}'
    assert records.parse(raw, LIMIT).y == 1e6


def test_predictions_encode_class_labels_as_keys() -> None:
    assert orjson.loads(records.encode({"proba": {True: 0.25, False: 0.75}})) == {
        "proba": {"true": 0.25, "false": 0.75}
    }


def test_deadletter_headers_say_where_and_why() -> None:
    headers = dict(records.deadletter_headers("not JSON: x", "events", 3, 42))
    assert headers == {
        "streamapp.error.reason": b"not JSON: x",
        "streamapp.source.topic": b"events",
        "streamapp.source.partition": b"3",
        "streamapp.source.offset": b"42",
    }
