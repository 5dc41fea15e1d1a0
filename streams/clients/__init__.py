"""The edge: Kafka (topics, state topics) and InfluxDB (writers) clients."""
