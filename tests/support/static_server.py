"""Storj linksharing over a test bucket: the app's own `storj-registry preview` (app/tools/preview.py), opened on a
SeaweedFS bucket (and prefix, the share root), every answer recorded for assertions about pulls."""

from __future__ import annotations

from app.settings import Settings
from app.storage.s3 import S3Storage
from app.tools.preview import Answer, Preview

from .seaweed import S3Server

RequestRecord = Answer


class StaticBucketServer:
    """Serve `bucket` (from key prefix `prefix`) over plain HTTP on 127.0.0.1, as linksharing would."""

    def __init__(self, s3: S3Server, bucket: str, prefix: str = "") -> None:
        settings = Settings(
            storage="s3",
            s3_endpoint=s3.endpoint,
            s3_bucket=bucket,
            s3_prefix=prefix,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
            s3_region=s3.region,
        )
        self.requests: list[RequestRecord] = []  # every request answered
        self.preview = Preview(S3Storage(settings), on_answer=self.requests.append)
        self.url = self.preview.url

    def start(self) -> str:
        return self.preview.start()

    def stop(self) -> None:
        self.preview.stop()

    def __enter__(self) -> StaticBucketServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
