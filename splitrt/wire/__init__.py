"""The wire: generated KServe v2 stubs plus conversion between frames and messages."""
