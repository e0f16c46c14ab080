"""A local S3: moto's server, speaking S3's wire protocol on a free loopback port, in a thread of
the test process. Tests reach it with genbot's own client (aiobotocore), as genbot reaches AWS or
MinIO; its objects live in this process, so a test may also backdate one (:meth:`Bucket.backdate`)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from aiobotocore.session import get_session

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

REGION = "us-east-1"
#: moto takes any keys; these keep the machine's own AWS credentials out of the tests.
ACCESS_KEY_ID = "genbot-test"
SECRET_ACCESS_KEY = "genbot-test-secret"


@dataclass(frozen=True)
class Bucket:
    """A new, empty bucket of the local S3 and how to reach it."""

    endpoint_url: str
    name: str

    @classmethod
    async def new(cls, endpoint_url: str) -> Bucket:
        """A bucket of its own (the local S3 keeps it until the session ends)."""
        bucket = cls(endpoint_url, f"genbot-test-{uuid.uuid4().hex[:12]}")
        async with _client(endpoint_url) as client:
            await client.create_bucket(Bucket=bucket.name)
        return bucket

    def env(self, prefix: str = "genbot/") -> dict[str, str]:
        """The settings that keep genbot's blobs in this bucket."""
        return {
            "GENBOT_BLOBS__STORE": "s3",
            "GENBOT_BLOBS__S3__BUCKET": self.name,
            "GENBOT_BLOBS__S3__ENDPOINT_URL": self.endpoint_url,
            "GENBOT_BLOBS__S3__REGION": REGION,
            "GENBOT_BLOBS__S3__ACCESS_KEY_ID": ACCESS_KEY_ID,
            "GENBOT_BLOBS__S3__SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "GENBOT_BLOBS__S3__PREFIX": prefix,
        }

    async def keys(self) -> list[str]:
        """Every key of the bucket, whoever wrote it, in S3's order (by name)."""
        async with _client(self.endpoint_url) as client:
            listed = await client.list_objects_v2(Bucket=self.name)
            return [item["Key"] for item in listed.get("Contents", []) if "Key" in item]

    async def put(self, key: str, data: bytes) -> None:
        """Write ``key`` as it is (no prefix added), as another program sharing the bucket would."""
        async with _client(self.endpoint_url) as client:
            await client.put_object(Bucket=self.name, Key=key, Body=data)

    def backdate(self, key: str, when: datetime) -> None:
        """Make ``key`` look last written at ``when`` (its LastModified)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        stored = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[self.name].keys[key]
        stored.last_modified = when.astimezone(UTC).replace(tzinfo=None)  # moto keeps naive UTC


@contextlib.asynccontextmanager
async def _client(endpoint_url: str) -> AsyncIterator[S3Client]:
    async with get_session().create_client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ) as client:
        yield client


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The local S3's endpoint URL, for the session."""
    from moto.server import ThreadedMotoServer  # only when a test asks for it: moto is big

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest_asyncio.fixture
async def s3_bucket(s3_server: str) -> Bucket:
    """A bucket of the test's own."""
    return await Bucket.new(s3_server)
