"""Operator tools over a registry bucket: `storj-registry fsck` and `storj-registry gc`."""
