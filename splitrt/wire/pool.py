"""The descriptor pool splitrt's wire messages live in: a private one, not protobuf's default.

Triton's ``tritonclient`` registers the same KServe v2 names (``inference.ModelInferRequest``,
...) in the default pool, and protobuf refuses a second file that defines a name already
there.  Kept apart, both load into one process; on the wire nothing changes (message and
service names, field numbers and bytes are the same).  ``make proto`` regenerates the stubs
and points them here (``protos/generate.py``).
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
