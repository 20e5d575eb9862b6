"""Code every driftloop service shares: events, bus, database, settings, telemetry."""
