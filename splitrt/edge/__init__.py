"""The device side: frame sources, the head runner and the streaming client."""
