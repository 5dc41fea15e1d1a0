"""The alert kinds and every threshold of the rules (schemas/CONTRACT.md section 6).

:data:`KINDS` is the contract's rules table (kind -> subject type, severity); :class:`AlertPolicy`
holds the thresholds, whose defaults are the contract's and whose field names are the keys of
``CITYSTREAM_ALERT_THRESHOLDS`` (streams/settings.py checks them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from schemas.alert import AlertSeverity, SubjectType

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000

PM25_ADVISORY: Final = "air.pm25_advisory"
PM25_WARNING: Final = "air.pm25_warning"
PM10_ADVISORY: Final = "air.pm10_advisory"
PM10_WARNING: Final = "air.pm10_warning"
O3_ADVISORY: Final = "air.o3_advisory"
LOT_FULL: Final = "parking.lot_full"
HOTSPOT: Final = "adas.hotspot"
ROAD_HAZARD: Final = "road.hazard"
DEVICE_OFFLINE: Final = "device.offline"
BATTERY_LOW: Final = "device.battery_low"
DEVICE_STUCK: Final = "device.stuck"

#: kind -> (subject type, severity), as the contract's rules table
KINDS: Final[Mapping[str, tuple[SubjectType, AlertSeverity]]] = {
    PM25_ADVISORY: ("station", "warning"),
    PM25_WARNING: ("station", "critical"),
    PM10_ADVISORY: ("station", "warning"),
    PM10_WARNING: ("station", "critical"),
    O3_ADVISORY: ("station", "warning"),
    LOT_FULL: ("lot", "info"),
    HOTSPOT: ("cell", "warning"),
    ROAD_HAZARD: ("cell", "info"),
    DEVICE_OFFLINE: ("device", "warning"),
    BATTERY_LOW: ("device", "info"),
    DEVICE_STUCK: ("device", "warning"),
}

STATION: Final = "station"
PARKING: Final = "parking"


#: hourly-mean quantity -> (label, unit, decimals shown in messages)
AIR_QUANTITIES: Final[Mapping[str, tuple[str, str, int]]] = {
    "pm25_ugm3": ("PM2.5", "µg/m³", 1),
    "pm10_ugm3": ("PM10", "µg/m³", 1),
    "o3_ppm": ("O3", "ppm", 3),
}


@dataclass(frozen=True, slots=True)
class AirRule:
    """One hourly-mean rule of a station: raise at ``raise_at`` for ``hours`` hours, clear below ``clear_below``."""

    kind: str
    quantity: str  # key of the hourly means, one of AIR_QUANTITIES
    level: str  # "advisory" or "warning", for messages
    raise_at: float
    clear_below: float
    hours: int

    @property
    def label(self) -> str:
        return AIR_QUANTITIES[self.quantity][0]

    @property
    def unit(self) -> str:
        return AIR_QUANTITIES[self.quantity][1]

    @property
    def decimals(self) -> int:
        return AIR_QUANTITIES[self.quantity][2]


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Every threshold of the rules; the defaults are the contract's (section 6).

    A ``*_raise`` value raises at or above it (battery: below it); a ``*_clear`` value clears below
    it (battery: at or above it). Durations are in milliseconds.
    """

    pm25_advisory_raise: float = 75.0
    pm25_advisory_clear: float = 35.0
    pm25_warning_raise: float = 150.0
    pm25_warning_clear: float = 75.0
    pm10_advisory_raise: float = 150.0
    pm10_advisory_clear: float = 100.0
    pm10_warning_raise: float = 300.0
    pm10_warning_clear: float = 150.0
    pm_consecutive_hours: int = 2
    o3_advisory_raise: float = 0.12
    o3_advisory_clear: float = 0.12
    o3_consecutive_hours: int = 1
    lot_full_raise: float = 0.95
    lot_full_clear: float = 0.85
    hotspot_min_warnings: int = 5
    hotspot_min_taxis: int = 3
    hotspot_window_ms: int = HOUR_MS
    hotspot_quiet_ms: int = HOUR_MS
    hazard_min_taxis: int = 3
    hazard_window_ms: int = 24 * HOUR_MS
    hazard_quiet_ms: int = 24 * HOUR_MS
    station_offline_ms: int = 10 * MINUTE_MS
    parking_offline_ms: int = 36 * HOUR_MS
    battery_low_raise: float = 2.9
    battery_low_clear: float = 3.0

    def __post_init__(self) -> None:
        for rule in self.air_rules():
            if rule.clear_below > rule.raise_at:
                raise ValueError(f"{rule.kind}: the clear threshold must not exceed the raise threshold")
            if rule.hours < 1:
                raise ValueError(f"{rule.kind}: needs at least 1 hour")
        if self.lot_full_clear > self.lot_full_raise:
            raise ValueError("lot_full_clear must not exceed lot_full_raise")
        if self.battery_low_clear < self.battery_low_raise:
            raise ValueError("battery_low_clear must not be below battery_low_raise")
        for name in ("hotspot_window_ms", "hotspot_quiet_ms", "hazard_window_ms", "hazard_quiet_ms"):
            if getattr(self, name) < MINUTE_MS:
                raise ValueError(f"{name} must be at least one minute")

    def air_rules(self) -> tuple[AirRule, ...]:
        """The station rules, in the order their alerts are emitted for one hour."""
        pm = self.pm_consecutive_hours
        return (
            AirRule(PM25_ADVISORY, "pm25_ugm3", "advisory", self.pm25_advisory_raise, self.pm25_advisory_clear, pm),
            AirRule(PM25_WARNING, "pm25_ugm3", "warning", self.pm25_warning_raise, self.pm25_warning_clear, pm),
            AirRule(PM10_ADVISORY, "pm10_ugm3", "advisory", self.pm10_advisory_raise, self.pm10_advisory_clear, pm),
            AirRule(PM10_WARNING, "pm10_ugm3", "warning", self.pm10_warning_raise, self.pm10_warning_clear, pm),
            AirRule(
                O3_ADVISORY,
                "o3_ppm",
                "advisory",
                self.o3_advisory_raise,
                self.o3_advisory_clear,
                self.o3_consecutive_hours,
            ),
        )

    def offline_ms(self, device_kind: str) -> int:
        if device_kind == STATION:
            return self.station_offline_ms
        if device_kind == PARKING:
            return self.parking_offline_ms
        raise ValueError(f"unknown device kind {device_kind!r} (expected {STATION!r} or {PARKING!r})")
