"""The pure core: from a message's bytes to readings, dead letters, windows and line protocol.

Nothing here imports Faust, a Kafka or HTTP client, or a CLI library: a ruff rule (banned-api)
and tests/unit/test_layers.py check it.
"""
