"""Push benchmarks against the reference registry and the raw S3 upload (not part of the test suite)."""
