"""The fault matrix (``make test-faults``): every failure mode, on every backend."""
