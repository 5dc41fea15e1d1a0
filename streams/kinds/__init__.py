"""The sensor kinds: what each kind's readings become (raw points, the record its windows keep, its windows)."""
