"""Publishing and mirroring without a server: `storj-registry copy` and `storj-registry sync`.

A source (an OCI layout, an archive, or any registry) is read here; everything written goes through the
registry's own publishing code (`app.registry`), exactly as a push to the service would.
"""
