"""The ChatAdapter against the fake Web API: Slack's errors become genbot's."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from adapters.slack.adapter import SlackChat, make_client
from bot.app import Runtime, build_slack
from bot.config import ConfigError, SlackSettings
from bot.errors import ErrorCode
from bot.models import MessageRef, State, StatusView
from bot.ports import PARTIAL, MessageGone, MessageUnreachable, NotYet, RateLimited, Spend
from tests.adapters.slack.fake_slack import TOKEN, FakeSlack


def view(**changes: object) -> StatusView:
    base: dict[str, object] = {
        "job": 3,
        "state": State.QUEUED,
        "headline": "Queued · #1 in line",
        "prompt": "a fox",
        "details": "job 3",
        "requested_by": "alice",
    }
    base.update(changes)
    return StatusView(**base)  # type: ignore[arg-type]


async def no_blobs(_key: str) -> bytes | None:
    return None


async def png(_key: str) -> bytes | None:
    return b"\x89PNG fake"


def chat(fake: FakeSlack, blobs=no_blobs, **kwargs: object) -> SlackChat:  # type: ignore[no-untyped-def]
    return SlackChat(make_client(TOKEN, fake.api_url), blobs, **kwargs)  # type: ignore[arg-type]


async def test_a_deleted_message_is_gone(fake: FakeSlack) -> None:
    with pytest.raises(MessageGone):
        await chat(fake).edit_status(MessageRef("slack", "C1", "123.456"), view())


async def test_posting_where_the_bot_is_not_gives_plain_words(fake: FakeSlack) -> None:
    fake.not_in_channel.add("C9")
    with pytest.raises(MessageUnreachable) as caught:
        await chat(fake).post_status("C9", view())
    assert caught.value.code is ErrorCode.CHAT_UNAVAILABLE
    assert "invite it with /invite @genbot" in caught.value.text.what


async def test_an_edit_where_the_bot_was_removed_is_logged_not_raised(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = chat(fake)
    ref = await adapter.post_status("C1", view())
    fake.not_in_channel.add("C1")
    with caplog.at_level(logging.ERROR, "adapters.slack.adapter"):
        assert await adapter.edit_status(ref, view(headline="Queued · starting")) == ref
    assert "genbot is not a member of this channel" in caplog.text


async def test_an_image_slack_never_shows_falls_back_to_the_thread_and_is_uploaded_once(
    fake: FakeSlack,
) -> None:
    fake.invalid_blocks_times = 100
    adapter = chat(fake, png, image_retry_delays=(0.5, 1.0))
    ref = await adapter.post_status("C1", view())
    done = view(state=State.SUCCEEDED, headline="Done", image_key="results/3.png")
    delays = []
    while True:  # what the renderer does: store the reference, try again when told
        try:
            new_ref = await adapter.edit_status(ref, done)
            break
        except NotYet as later:
            delays.append(later.retry_after)
            ref = later.ref
    assert delays == [0.5, 1.0, 1.0], "the waits are the renderer's to schedule, not slept here"
    file_id = new_ref.extra["file_id"]
    assert new_ref.extra["image_key"] == "results/3.png" and fake.uploads[file_id] == b"\x89PNG fake"
    message = fake.messages[ref.message_id]
    assert message.blocks[-1]["elements"][0]["text"] == "The image is in the thread under this message."
    assert len(fake.called("chat.update")) == 4  # three tries with the image, then the fallback

    await adapter.edit_status(new_ref, done)  # a repeat (say after a restart) does not upload again
    assert len(fake.called("files.getUploadURLExternal")) == 1
    assert len(fake.called("files.completeUploadExternal")) == 1


async def test_a_429_raises_for_its_channel_with_slacks_retry_after(fake: FakeSlack) -> None:
    adapter = chat(fake)
    fake.storm(["chat.postMessage"], 1, retry_after=7)
    with pytest.raises(RateLimited) as caught:
        await adapter.post_status("C1", view())
    assert (caught.value.scope, caught.value.retry_after) == ("slack:channel:C1", 7.0)
    assert len(fake.called("chat.postMessage")) == 1, "not retried here"


async def test_an_upload_whose_completion_meets_a_429_is_resumed_not_uploaded_again(fake: FakeSlack) -> None:
    adapter = chat(fake, png)
    ref = await adapter.post_status("C1", view())
    done = view(state=State.SUCCEEDED, headline="Done", image_key="results/3.png")
    fake.storm(["files.completeUploadExternal"], 1, retry_after=1)
    with pytest.raises(RateLimited) as caught:
        await adapter.edit_status(ref, done)
    resumed = caught.value.ref
    assert resumed is not None and resumed.extra["upload_file_id"]
    new_ref = await adapter.edit_status(resumed, done)
    assert len(fake.called("files.getUploadURLExternal")) == 1, "the bytes went up once"
    assert len(fake.uploads) == 1, "no orphan file"
    assert new_ref.extra["file_id"] == resumed.extra["upload_file_id"]
    assert fake.called("files.completeUploadExternal")[-1].status == 200


def test_each_write_spends_the_channel_and_an_edit_the_workspace_too(fake: FakeSlack) -> None:
    adapter = chat(fake)
    ref = MessageRef("slack", "C1", "1.2")
    assert adapter.spends("C1", None, view()) == [Spend("slack:channel", "C1")]
    assert adapter.spends("C1", ref, view()) == [Spend("slack:channel", "C1"), Spend("slack:update", "")]
    image = view(state=State.SUCCEEDED, image_key="results/3.png")
    assert adapter.spends("C1", ref, image)[0].cost == 2, "the file shared, then the edit"
    shared = replace(ref, extra={"image_key": "results/3.png", "file_id": "F1"})
    assert adapter.spends("C1", shared, image)[0].cost == 1


async def test_a_missing_token_is_named_at_start(slack_rt: Runtime) -> None:
    def with_slack(**values: object) -> Runtime:
        slack = SlackSettings(**values)  # type: ignore[arg-type]
        return replace(slack_rt, settings=slack_rt.settings.model_copy(update={"slack": slack}))

    with pytest.raises(ConfigError, match="GENBOT_SLACK__BOT_TOKEN"):
        build_slack(with_slack())
    with pytest.raises(ConfigError, match="GENBOT_SLACK__SIGNING_SECRET"):
        build_slack(with_slack(bot_token=TOKEN))
    assert build_slack(with_slack(bot_token=TOKEN, app_token="xapp-1")).app_token == "xapp-1"


async def test_an_upload_slack_refuses_says_so_in_the_message_and_is_not_retried(fake: FakeSlack) -> None:
    fake.files_not_in_channel.add("C1")
    adapter = chat(fake, png)
    ref = await adapter.post_status("C1", view())
    done = view(state=State.SUCCEEDED, headline="Done", image_key="results/3.png")
    assert await adapter.edit_status(ref, done) == ref
    text = fake.messages[ref.message_id].blocks[-1]["elements"][0]["text"]
    assert text.startswith("genbot could not post the image here.")
    assert "/invite @genbot" in text


async def test_a_repost_with_an_image_is_posted_first_then_finished(fake: FakeSlack) -> None:
    adapter = chat(fake, png)
    done = view(state=State.SUCCEEDED, headline="Done", image_key="results/3.png")
    ref = await adapter.post_status("C1", done)
    assert ref.extra == {PARTIAL: True}, "the renderer stores it, then edits the image in"
    assert fake.called("files.getUploadURLExternal") == []
