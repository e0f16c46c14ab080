"""The S3 blob store, against a local S3 that speaks the wire protocol (moto's server), reached with
the client genbot uses in production."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from bot.app import blob_store
from bot.config import ConfigError, StartupError, load_settings
from storage import blobs as blobs_module
from storage import s3 as s3_module
from storage.blobs import prune_blobs
from storage.s3 import S3BlobStore, S3Unavailable, s3_blob_store
from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, Bucket


def opened(
    endpoint_url: str, bucket: str, prefix: str = "genbot/"
) -> contextlib.AbstractAsyncContextManager[S3BlobStore]:
    return s3_blob_store(
        bucket,
        prefix,
        endpoint_url=endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )


@pytest_asyncio.fixture
async def store(s3_bucket: Bucket) -> AsyncIterator[S3BlobStore]:
    async with opened(s3_bucket.endpoint_url, s3_bucket.name) as value:
        yield value


async def test_the_bucket_keeps_blobs_under_the_prefix_and_replaces_one_written_again(
    store: S3BlobStore, s3_bucket: Bucket
) -> None:
    data = bytes(range(256)) * 40  # every byte value: binary, not text
    await store.put("results/1.png", data)
    await store.put("previews/1.jpg", b"first")
    await store.put("previews/1.jpg", b"second, longer")
    assert await store.get("results/1.png") == data
    assert await store.get("previews/1.jpg") == b"second, longer"
    assert await store.get("results/2.png") is None
    assert await s3_bucket.keys() == ["genbot/previews/1.jpg", "genbot/results/1.png"]


async def test_the_bucket_refuses_keys_that_are_not_safe_paths(store: S3BlobStore, s3_bucket: Bucket) -> None:
    for key in ("../etc/passwd", "/abs", "a/../b", "spaces here", "x" * 256):
        with pytest.raises(ValueError, match="invalid blob key"):
            await store.put(key, b"no")
        assert await store.get(key) is None
    assert await s3_bucket.keys() == []


async def test_stores_with_other_prefixes_share_a_bucket_apart(s3_bucket: Bucket) -> None:
    async with (
        opened(s3_bucket.endpoint_url, s3_bucket.name, "staging/") as staging,
        opened(s3_bucket.endpoint_url, s3_bucket.name, "") as bare,
    ):
        await staging.put("results/1.png", b"staging")
        await bare.put("results/1.png", b"bare")
        assert await staging.get("results/1.png") == b"staging"
        assert await bare.get("results/1.png") == b"bare"
    assert await s3_bucket.keys() == ["results/1.png", "staging/results/1.png"]


async def test_blobs_past_the_retention_are_pruned_in_batches_under_the_prefix_only(
    store: S3BlobStore, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    for n in range(5):
        await store.put(f"results/{n}.png", b"old")
        s3_bucket.backdate(f"genbot/results/{n}.png", now - timedelta(days=31))
    await store.put("results/new.png", b"new")
    await s3_bucket.put("elsewhere/old.png", b"not genbot's")
    s3_bucket.backdate("elsewhere/old.png", now - timedelta(days=365))
    monkeypatch.setattr(blobs_module, "PRUNE_BATCH", 2)  # three calls: 2, 2, 1

    assert await prune_blobs(store, keep_days=30, now=now) == 5
    assert await s3_bucket.keys() == ["elsewhere/old.png", "genbot/results/new.png"]
    assert await prune_blobs(store, keep_days=30, now=now) == 0


async def test_one_prune_removes_at_most_its_share_in_several_deletes(
    store: S3BlobStore, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        await store.put(f"previews/{n}.jpg", b"jpg")
    monkeypatch.setattr(s3_module, "DELETE_MAX", 2)  # DeleteObjects of 2, then 1
    later = datetime.now(UTC) + timedelta(hours=1)  # everything is older than that

    assert await store.prune(later, most=3) == 3
    assert len(await s3_bucket.keys()) == 2
    assert await store.prune(later, most=3) == 2
    assert await s3_bucket.keys() == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_bucket_out_of_reach_is_a_lost_connection_as_the_database_s_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Callers treat a lost S3 as they treat a lost database: a ConnectionError."""
    monkeypatch.setattr(s3_module, "ATTEMPTS", 1)  # botocore's pauses between tries are not the point
    async with opened(f"http://127.0.0.1:{_closed_port()}", "nowhere") as gone:
        with pytest.raises(S3Unavailable) as put:
            await gone.put("results/1.png", b"png")
        with pytest.raises(ConnectionError):
            await gone.get("results/1.png")
        with pytest.raises(ConnectionError):
            await gone.prune(datetime.now(UTC), most=10)
    assert "PutObject" in str(put.value)


# -- settings and start-up ---------------------------------------------------------------------


def test_s3_without_a_bucket_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, blobs={"store": "s3"})
    assert str(caught.value) == (
        "GENBOT_BLOBS__S3__BUCKET: set the bucket's name to keep blobs in S3 (GENBOT_BLOBS__STORE=s3)"
    )


def test_s3_keys_go_in_pairs_and_the_endpoint_is_a_url() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            _env_file=None,
            blobs={
                "store": "s3",
                "s3": {"bucket": "b", "access_key_id": "AKIA", "endpoint_url": "minio:9000"},
            },
        )
    assert str(caught.value).splitlines() == [
        "GENBOT_BLOBS__S3__ENDPOINT_URL: must be an http:// or https:// URL, such as http://127.0.0.1:9000",
    ]
    with pytest.raises(ConfigError, match=r"^GENBOT_BLOBS__S3__ACCESS_KEY_ID and GENBOT_BLOBS__S3__SECRET_"):
        load_settings(_env_file=None, blobs={"store": "s3", "s3": {"bucket": "b", "access_key_id": "AKIA"}})
    # Neither key: the AWS credential chain finds them.
    chain = load_settings(_env_file=None, blobs={"store": "s3", "s3": {"bucket": "b"}}).blobs
    assert not chain.s3.access_key_id and not chain.in_database("postgres://db/genbot")


def test_a_bucket_does_not_change_what_auto_chooses_but_is_named(caplog: pytest.LogCaptureFixture) -> None:
    auto = load_settings(_env_file=None, blobs={"s3": {"bucket": "b"}}).blobs
    assert auto.in_database("postgres://db/genbot") and not auto.in_database("sqlite://genbot.sqlite3")
    assert caplog.messages == [
        "GENBOT_BLOBS__S3__BUCKET is set but GENBOT_BLOBS__STORE is 'auto': the bucket is not used "
        "(set GENBOT_BLOBS__STORE=s3 to use it)"
    ]


async def test_the_runtime_s_store_is_the_bucket_the_settings_name(
    s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in s3_bucket.env().items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None, blobs={"dir": str(tmp_path / "blobs")})
    async with blob_store(settings) as blobs:
        assert isinstance(blobs, S3BlobStore)
        await blobs.put("results/1.png", b"png")
    assert await s3_bucket.keys() == ["genbot/results/1.png"]
    assert not (tmp_path / "blobs").exists()


async def test_a_bucket_that_cannot_be_used_stops_start_up_naming_the_settings(
    s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**s3_bucket.env(), "GENBOT_BLOBS__S3__BUCKET": "no-such-bucket"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StartupError) as caught:
        async with blob_store(load_settings(_env_file=None)):
            pytest.fail("the block ran")
    assert str(caught.value) == (
        f"cannot use the S3 bucket 'no-such-bucket' at {s3_bucket.endpoint_url} (there is no bucket "
        "'no-such-bucket'): check GENBOT_BLOBS__S3__BUCKET, GENBOT_BLOBS__S3__ENDPOINT_URL and the "
        "credentials"
    )
