"""The local chat has no login: it stays on loopback unless told otherwise, and says so."""

from __future__ import annotations

import logging

import pytest

from adapters.local.chat import LocalChat, is_loopback
from tests.image_jobs import every_spec


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.0.2.1", False),
        ("::", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


class _Nothing:
    async def handle(self, *_args: object) -> None: ...

    async def handle_action(self, *_args: object) -> None: ...


async def _no_blob(_key: str) -> None:
    return None


def _chat() -> LocalChat:
    return LocalChat(
        log_store=None,  # type: ignore[arg-type]  # not used by start/stop
        handler=_Nothing(),  # type: ignore[arg-type]
        blobs=_no_blob,
        specs=every_spec(),
        members=["Alice"],
        admins=[],
    )


async def test_listening_beyond_loopback_warns(caplog: pytest.LogCaptureFixture) -> None:
    chat = _chat()
    with caplog.at_level(logging.WARNING, logger="adapters.local.chat"):
        await chat.start("0.0.0.0", 0)
    await chat.stop()
    assert "has no login" in caplog.text


async def test_loopback_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    chat = _chat()
    with caplog.at_level(logging.WARNING, logger="adapters.local.chat"):
        await chat.start("127.0.0.1", 0)
    assert chat.port
    await chat.stop()
    assert caplog.text == ""
