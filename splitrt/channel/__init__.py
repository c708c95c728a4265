"""Channels: bandwidth traces, the live shaping proxy and CPU contention for experiments."""
