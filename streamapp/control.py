"""Signed control events: only the web views (which hold STREAMAPP_SIGNING_KEY) may promote a
model or roll a partition back.

A control event travels in the events topic, which every producer of events may write, so Kafka
ACLs cannot tell a forged one from a real one. The view that writes it signs, in two headers, the
partition it is written to, its id, the action, the action's argument and an expiry; the worker
checks all of them against the record before it applies anything. A copy written to another
partition, with another argument, or after its expiry (record time) does not verify; a copy of a
valid event within its lifetime is refused by id, as the partition remembers the ids it applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamapp.records import BadEvent, Control
from streamapp.signing import CONTROL, Signer

SIGNATURE = "streamapp.control.signature"
EXPIRES = "streamapp.control.expires"
#: seconds a signed control event stays valid: time to be written and read, with clock skew
LIFETIME = 300


def _argument(control: Control) -> str:
    return str(control.model if control.action == "promote" else control.seq)


def sign(signer: Signer, partition: int, control: Control, expires: int) -> list[tuple[str, bytes]]:
    """The headers that make `control` valid in `partition` until `expires` (seconds, epoch)."""
    mac = signer.sign(CONTROL, partition, control.id, control.action, _argument(control), expires)
    return [(SIGNATURE, mac.hex().encode()), (EXPIRES, str(expires).encode())]


def verify(
    signer: Signer,
    partition: int,
    control: Control,
    headers: Sequence[tuple[str, bytes]] | None,
    record_time: float,
) -> None:
    """Raises BadEvent with the reason unless `control` was signed for this partition and is
    not expired at `record_time` (the record's timestamp, so a replay decides alike)."""
    found = dict(headers or ())
    signature, expires = found.get(SIGNATURE), found.get(EXPIRES)
    if signature is None or expires is None:
        raise BadEvent(
            "unsigned control event: promotions and rollbacks are accepted only from the web "
            "views (POST /models/{partition}/promote or /rollback), which sign them"
        )
    try:
        mac = bytes.fromhex(signature.decode("ascii"))
        until = int(expires.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BadEvent("control event with a malformed signature header") from None
    if not signer.verify(mac, CONTROL, partition, control.id, control.action, _argument(control), until):
        raise BadEvent(
            f"control event with an invalid signature (forged, altered, signed with another key "
            f"or for another partition than {partition})"
        )
    if record_time > until:
        raise BadEvent(f"expired control event: valid until {until}, written at {record_time:.0f}")
