"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, Backblaze B2, ...): every bot
and worker that reaches the bucket reads what any of them wrote, and the images stay out of the
database. For large deployments; chosen by ``GENBOT_BLOBS__STORE=s3``.

This module needs the ``s3`` extra (aiobotocore): :mod:`bot.app` imports it only when the setting
chooses it, so that genbot without the extra runs.

A bucket that cannot be reached (refused, timed out, a 5xx after botocore's own retries) raises
:class:`S3Unavailable`, a :class:`ConnectionError`, as the database's blob store does when its
connection is lost: callers treat both alike.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from storage.blobs import valid_key

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger(__name__)

#: Tries of one request, the first included, when the service does not answer or answers 5xx
#: or "slow down" (botocore's standard retries, with a jittered, growing pause between).
ATTEMPTS = 3
#: The most keys one DeleteObjects request takes (S3's limit).
DELETE_MAX = 1000
#: A GetObject's answer for a key the bucket does not have (AWS, MinIO, R2 and B2 say NoSuchKey).
MISSING = frozenset({"NoSuchKey", "NotFound", "404"})


class S3Unavailable(ConnectionError):
    """The bucket's service could not be reached or failed (5xx), after botocore's retries."""


class BucketUnusable(Exception):
    """The bucket cannot be used: out of reach, missing, or refused to these credentials. Its
    text says which."""


@contextlib.contextmanager
def _reaching(what: str) -> Iterator[None]:
    """Turn botocore's "the service did not answer" errors in the block into :class:`S3Unavailable`;
    any other error (a refusal: 403, a missing bucket) goes on as it is."""
    try:
        yield
    except (BotoConnectionError, HTTPClientError) as exc:
        raise S3Unavailable(f"S3 {what}: {exc}") from exc
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            raise S3Unavailable(f"S3 {what}: {exc}") from exc
        raise


class S3BlobStore:
    """Blobs as objects of ``bucket``, each named ``prefix`` + its key. A write is one PutObject
    (a reader sees the old bytes or the new, never half); writing a key again replaces it, so a
    retry is harmless. Everything under ``prefix`` is genbot's: :meth:`prune` removes what is old
    there, whoever wrote it.

    Raises :class:`S3Unavailable` when the service does not answer (see the module docstring)."""

    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    async def check(self) -> None:
        """Raise :class:`BucketUnusable` unless the bucket answers to these credentials
        (HeadBucket). For start-up: a wrong setting stops it, rather than every job failing."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise BucketUnusable(f"there is no bucket {self.bucket!r}") from None
            if code in ("403", "AccessDenied"):
                raise BucketUnusable(f"the bucket {self.bucket!r} refuses these credentials") from None
            raise BucketUnusable(f"the bucket {self.bucket!r} answered {code or exc}") from None
        except BotoCoreError as exc:  # out of reach, or no credentials found
            raise BucketUnusable(str(exc)) from None

    async def put(self, key: str, data: bytes) -> None:
        """Raises ValueError for a key that is not :func:`~storage.blobs.valid_key`."""
        if not valid_key(key):
            raise ValueError("invalid blob key")
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        with _reaching("PutObject"):
            await self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType=content_type
            )

    async def get(self, key: str) -> bytes | None:
        """The blob, or None when there is none by that key (or the key is not valid)."""
        if not valid_key(key):
            return None
        with _reaching("GetObject"):
            try:
                found = await self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in MISSING:
                    return None
                raise
            async with found["Body"] as body:
                return await body.read()

    async def prune(self, older_than: datetime, most: int) -> int:
        """Remove at most ``most`` objects under the prefix last written before ``older_than``
        (their LastModified, a timezone-aware time), in DeleteObjects of up to
        :data:`DELETE_MAX`; how many went. Each call lists the prefix from its start (S3 lists
        by name, not by age): a bucket lifecycle rule does the same work without the listing."""
        old: list[str] = []
        with _reaching("ListObjectsV2"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            async for page in pages:
                old += [
                    item["Key"]
                    for item in page.get("Contents", [])
                    if "Key" in item and "LastModified" in item and item["LastModified"] < older_than
                ]
                if len(old) >= most:
                    break
        removed = 0
        for start in range(0, min(len(old), most), DELETE_MAX):
            batch = old[start : min(start + DELETE_MAX, most)]
            with _reaching("DeleteObjects"):
                answer = await self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                )
            errors = answer.get("Errors", [])
            if errors:  # another process removed them first, or a key the bucket refuses
                log.warning("S3 kept %d of %d old blobs: %s", len(errors), len(batch), errors[0])
            removed += len(batch) - len(errors)
        return removed


@contextlib.asynccontextmanager
async def s3_blob_store(
    bucket: str,
    prefix: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> AsyncIterator[S3BlobStore]:
    """An :class:`S3BlobStore` with a client of its own (one pool of connections) for the life of
    the block. ``endpoint_url`` None: AWS S3. Keys None: the AWS credential chain finds them."""
    config = AioConfig(
        connect_timeout=5,
        read_timeout=30,
        retries={"mode": "standard", "max_attempts": ATTEMPTS},
        # Services other than AWS are reached by path (http://host:9000/bucket/key): a name such
        # as `minio` in compose has no `bucket.minio` beside it.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # Checksums only where S3 requires them: MinIO, R2 and B2 lag behind AWS's newer ones.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = get_session()
    async with session.create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    ) as client:
        yield S3BlobStore(client, bucket, prefix)
