"""The alert rules (schemas/CONTRACT.md section 6), evaluated on final windows and on readings.

Pure, deterministic logic: nothing here touches Faust, Kafka, InfluxDB or a clock; every instant is
passed in (``now_ms`` only stamps ``emitted_at``; ``wall_ms`` is the wall clock of the offline rule).
A partition keeps one :class:`~streams.rules.book.AlertBook` (its open alerts) and the rule objects
(what each rule remembers between windows); all of them snapshot with ``dump()`` to JSON-able data
and restore with ``load()``. Checkpoint the book and the rules together, so that a restart neither
repeats nor loses an alert.

- :mod:`streams.rules.policy`: the alert kinds (:data:`KINDS`) and every threshold (:class:`AlertPolicy`).
- :mod:`streams.rules.book`: :class:`AlertBook`, the open alerts; every alert is raised and cleared there, once.
- :mod:`streams.rules.messages`: how values, thresholds and durations read in the messages.
- :mod:`streams.rules.air`: :class:`StationAirRules`, fed with each final 1-hour window of a station
  (its hourly means) through ``on_final_hour``.
- :mod:`streams.rules.lots`: :class:`LotRules`, fed with each final 1-minute ``occupancy`` of a lot
  through ``on_final_minute``.
- :mod:`streams.rules.cells`: :class:`CellRules`, fed with each final 1-minute window of an H3 cell
  (collision warnings per taxi, taxis that reported a road hazard), per cell in window order,
  through ``on_final_minute``; then with the new final-window frontier through ``on_frontier`` (a
  cell without readings has no windows, so only the frontier can tell that it has been quiet for
  an hour).
- :mod:`streams.rules.devices`: :class:`DeviceRules`: ``seen`` with each valid reading (wall clock),
  ``check_offline`` periodically, ``battery`` with each parking reading that carries ``battery_v``.
- :mod:`streams.rules.points`: an alert as a line of the ``alerts`` measurement (and why there are
  two line formats).
- :mod:`streams.rules.partition`: which of those rules each kind of partition runs, and when.

Each rule returns the alerts it raised or cleared, to be published on ``city.alerts.v1`` (keyed by
the subject id) and written to the ``alerts`` measurement.
"""
