"""The MQTT bridge (``citystream bridge mqtt``, schemas/CONTRACT.md section 9): LoRaWAN network servers'
uplinks, and contract readings sent over MQTT, to the source topics.

- :mod:`~streams.bridge.service`: :class:`Bridge`, the MQTT session and the Kafka producer, at least once.
- :mod:`~streams.bridge.web`: ``/metrics``, ``/healthz``, ``/readyz``.
- :mod:`~streams.bridge.main`: :func:`run_bridge`, both together until SIGTERM or SIGINT.

The mapping itself is pure and lives in :mod:`streams.core.uplinks`.
"""
