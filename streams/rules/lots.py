"""``parking.lot_full``: each parking lot's final 1-minute occupancy."""

from __future__ import annotations

from schemas.alert import Alert
from streams.rules.book import AlertBook
from streams.rules.messages import number_text, value_text
from streams.rules.policy import LOT_FULL, AlertPolicy


class LotRules:
    """``parking.lot_full`` on each lot's final 1-minute occupancy: raise at >= 0.95, clear below 0.85.

    Holds no state of its own (the open alerts are in the book), so it has nothing to dump.
    """

    __slots__ = ("policy",)

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()

    def on_final_minute(
        self,
        book: AlertBook,
        lot_id: str,
        window_start_ms: int,
        window_end_ms: int,
        occupancy: float,
        now_ms: int,
    ) -> list[Alert]:
        policy = self.policy
        occupancy = float(occupancy)
        if book.is_open(LOT_FULL, lot_id):
            if occupancy >= policy.lot_full_clear:
                return []
            shown = value_text(occupancy * 100, policy.lot_full_clear * 100, 1)
            message = (
                f"Parking lot {lot_id} occupancy {shown}% < {number_text(policy.lot_full_clear * 100)}%: no longer full"
            )
            alert = book.clear_alert(
                LOT_FULL,
                lot_id,
                window_start_ms=window_start_ms,
                window_end_ms=window_end_ms,
                value=occupancy,
                threshold=policy.lot_full_clear,
                message=message,
                now_ms=now_ms,
            )
        else:
            if occupancy < policy.lot_full_raise:
                return []
            shown = value_text(occupancy * 100, policy.lot_full_raise * 100, 1)
            message = f"Parking lot {lot_id} occupancy {shown}% >= {number_text(policy.lot_full_raise * 100)}%: full"
            alert = book.raise_alert(
                LOT_FULL,
                lot_id,
                window_start_ms=window_start_ms,
                window_end_ms=window_end_ms,
                value=occupancy,
                threshold=policy.lot_full_raise,
                message=message,
                now_ms=now_ms,
            )
        return [alert] if alert is not None else []
