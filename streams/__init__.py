"""citystream: Faust agents that validate city sensor readings and write them to InfluxDB."""

__version__ = "0.1.0"
