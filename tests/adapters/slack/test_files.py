"""Files named by a Slack command's file option: how a value reads (``latest``, an id, a link), what
the adapter gives the core, and the fetch against the fake Web API: the member's newest file in the
channel, a file by id only if shared there, the bot token only to Slack's hosts, every size bound
before or during the download, and Slack's refusals as one sentence."""

from __future__ import annotations

from collections.abc import Awaitable

import pytest

from adapters.slack.adapter import make_client
from adapters.slack.files import (
    BUSY,
    GONE,
    LATEST,
    MISSING_SCOPE,
    NOT_A_FILE,
    NOT_HERE,
    SlackFiles,
    file_ref,
    may_carry_token,
    none_shared,
    pictures_only,
    shared_in,
)
from adapters.slack.payloads import command_request, options_usage
from bot.commands import CommandSpec, OptionSpec
from bot.errors import GenbotError
from bot.ports import Upload
from tests.adapters.slack.conftest import CHANNEL
from tests.adapters.slack.fake_slack import TEAM, TOKEN, FakeSlack
from tests.rate_limits import SlackLimits

OTHER = "C0002"
FILE = "F0123ABCD"
UPSCALE = CommandSpec(
    "upscale",
    "Make a picture larger",
    (
        OptionSpec("image", "image", "The picture", required=True),
        OptionSpec("factor", "string", "How many times", choices=("2", "4")),
    ),
)
MIXED = CommandSpec(
    "compare",
    "Two files",
    (OptionSpec("first", "image", "A picture", required=True), OptionSpec("notes", "attachment", "Notes")),
)


@pytest.mark.parametrize(
    ("value", "ref"),
    [
        ("latest", LATEST),
        (" Latest ", LATEST),
        (FILE, FILE),
        (f"https://test.slack.com/files/U0123/{FILE}/fox.png", FILE),
        (f"<https://test.slack.com/files/U0123/{FILE}/fox.png>", FILE),
        (f"<https://test.slack.com/files/ana/{FILE}/fox.png|fox.png>", FILE),
        (f"https://files.slack.com/files-pri/T0123-{FILE}/download/fox.png", FILE),
        (f"https://slack-files.com/T0123-{FILE}-8004f909b1", FILE),
        (f"https://test.slack.com/files/U0123/{FILE}/fox.png?origin_team=T0123&amp;x=1", FILE),
        ("F01", None),  # too short for a file id
        ("f0123abcd", None),
        ("fox.png", None),
        ("https://test.slack.com/archives/C0123/p1700000000000100", None),  # a message, not a file
        (f"ftp://test.slack.com/files/U0123/{FILE}/fox.png", None),
        ("", None),
    ],
)
def test_a_file_option_reads_as_latest_or_a_file_id(value: str, ref: str | None) -> None:
    assert file_ref(value) == ref


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.png", True),
        ("https://slack.com/files-pri/T1-F1/download/a.png", True),
        ("https://a.slack-edge.com/x.png", True),
        ("http://files.slack.com/files-pri/T1-F1/a.png", False),  # the token never goes in clear
        ("https://files.slack.com.evil.test/a.png", False),
        ("https://evilslack.com/a.png", False),
        ("https://user:pw@files.slack.com/a.png", False),
        ("https://drive.google.com/a.png", False),
        ("http://127.0.0.1:8123/files-pri/T1-F1/a.png", True),  # the configured Web API's own host
        ("http://127.0.0.1:8124/files-pri/T1-F1/a.png", False),
        ("http://localhost:8123/files-pri/T1-F1/a.png", False),
        ("https://127.0.0.1:8123/a.png", False),
        ("https://x.127.0.0.1/a.png", False),
    ],
)
def test_the_token_goes_to_slacks_hosts_and_the_configured_api_only(url: str, allowed: bool) -> None:
    assert may_carry_token(url, "http://127.0.0.1:8123/api/") is allowed


def test_govslacks_files_are_under_its_api_host() -> None:
    assert may_carry_token("https://files.slack-gov.com/files-pri/T1-F1/a.png", "https://slack-gov.com/api/")
    assert not may_carry_token("https://files.slack-gov.com.evil.test/a.png", "https://slack-gov.com/api/")


def test_a_file_is_shared_in_a_channel_by_its_lists_or_its_shares() -> None:
    assert shared_in({"channels": [CHANNEL]}, CHANNEL)
    assert shared_in({"groups": ["G0001"]}, "G0001")
    assert shared_in({"ims": ["D0001"]}, "D0001")
    assert shared_in({"shares": {"private": {"G0001": [{"ts": "1.2"}]}}}, "G0001")
    assert not shared_in({"channels": [OTHER], "shares": {"public": {OTHER: []}}}, CHANNEL)
    assert not shared_in({}, CHANNEL)


def command(text: str, name: str = "/upscale") -> dict[str, str]:
    return {"command": name, "text": text, "team_id": TEAM, "user_id": "UALICE", "channel_id": CHANNEL}


def test_a_required_file_option_left_out_is_the_newest_file_and_a_link_its_id() -> None:
    specs = (UPSCALE, MIXED)
    assert command_request(command("factor: 4"), specs).options == {"image": LATEST, "factor": "4"}
    assert command_request(command("upscale", "/genbot"), specs).options == {"image": LATEST}
    link = f"<https://test.slack.com/files/UBOB/{FILE}/fox.png|fox.png>"
    assert command_request(command(f"{link} factor: 2"), specs).options == {"image": FILE, "factor": "2"}
    assert command_request(command(f"upscale image: {FILE}", "/genbot"), specs).options == {"image": FILE}
    # an optional file option is only taken when given
    assert command_request(command("", "/compare"), specs).options == {"first": LATEST}
    both = command_request(command(f"notes: {FILE}", "/compare"), specs).options
    assert both == {"first": LATEST, "notes": FILE}


def test_a_value_that_names_no_file_is_refused_before_the_ack_naming_the_option() -> None:
    with pytest.raises(GenbotError) as refused:
        command_request(command("fox.png factor: 2"), (UPSCALE,))
    assert refused.value.member_detail is not None
    assert refused.value.member_detail.startswith("Image takes a Slack file: its link or id")


def test_the_usage_shows_a_file_option_as_one_to_leave_out() -> None:
    assert options_usage(UPSCALE) == "[image: file id or link] [factor: 2|4]"
    assert pictures_only(UPSCALE) and not pictures_only(MIXED)


# -- the fetch, against the fake Web API ---------------------------------------------------------


def files_of(fake: FakeSlack, token: str = TOKEN) -> SlackFiles:
    return SlackFiles(make_client(TOKEN, fake.api_url), token, fake.api_url)


async def refusal(fetching: Awaitable[Upload]) -> str:
    with pytest.raises(GenbotError) as refused:
        await fetching
    assert refused.value.member_detail is not None
    return refused.value.member_detail


async def test_latest_is_the_members_newest_picture_in_this_channel(fake: FakeSlack) -> None:
    mine = fake.share_file("UALICE", CHANNEL, "mine.png", b"\x89PNG mine")
    fake.share_file("UALICE", OTHER, "elsewhere.png", b"\x89PNG elsewhere")  # newer, another channel
    fake.share_file("UBOB", CHANNEL, "bobs.png", b"\x89PNG bob")  # newer, another member
    fake.share_file("UALICE", CHANNEL, "notes.pdf", b"%PDF-1.4", "application/pdf")  # newer, no picture
    files = files_of(fake)

    picture = await files.fetch(LATEST, channel=CHANNEL, member="UALICE", max_bytes=1000, pictures=True)
    assert (picture.name, picture.data, picture.content_type) == ("mine.png", b"\x89PNG mine", "image/png")
    anything = await files.fetch(LATEST, channel=CHANNEL, member="UALICE", max_bytes=1000)
    assert (anything.name, anything.content_type) == ("notes.pdf", "application/pdf")

    [listed, _] = fake.called("files.list")
    assert listed.args == {"channel": CHANNEL, "user": "UALICE", "count": "1", "types": "images"}
    assert mine["id"] not in {c.args.get("file") for c in fake.called("files.info")}
    assert [c.args["authorized"] for c in fake.called("download")] == [True, True]


async def test_nothing_shared_asks_the_member_to_share_it_first(fake: FakeSlack) -> None:
    fake.share_file("UALICE", OTHER, "elsewhere.png", b"\x89PNG")
    files = files_of(fake)
    said = await refusal(files.fetch(LATEST, channel=CHANNEL, member="UALICE", max_bytes=1000, pictures=True))
    assert said == none_shared(True)
    assert said.startswith("You have not shared a picture in this channel yet: share it here first")


async def test_a_file_by_id_must_have_been_shared_in_this_channel(fake: FakeSlack) -> None:
    bobs = fake.share_file("UBOB", CHANNEL, "bobs.png", b"\x89PNG bob")
    private = fake.share_file("UBOB", "G0001", "secret.png", b"\x89PNG secret")
    files = files_of(fake)

    got = await files.fetch(bobs["id"], channel=CHANNEL, member="UALICE", max_bytes=1000)
    assert got.data == b"\x89PNG bob", "any file shared in the channel, whoever shared it"
    link = f"<{private['permalink']}>"
    assert await refusal(files.fetch(link, channel=CHANNEL, member="UALICE", max_bytes=1000)) == NOT_HERE
    assert await refusal(files.fetch("fox", channel=CHANNEL, member="UALICE", max_bytes=1000)) == NOT_A_FILE
    downloaded = [c.args["file_id"] for c in fake.called("download")]
    assert downloaded == [bobs["id"]], "the private file was never downloaded"


async def test_a_file_gone_or_out_of_sight_is_one_sentence(fake: FakeSlack) -> None:
    deleted = fake.share_file("UALICE", CHANNEL, "old.png", b"\x89PNG")
    fake.delete_file(deleted["id"])
    fake.not_in_channel.add(OTHER)
    unseen = fake.share_file("UALICE", OTHER, "unseen.png", b"\x89PNG")
    files = files_of(fake)
    for ref in (deleted["id"], unseen["id"], "F99999999"):
        assert await refusal(files.fetch(ref, channel=CHANNEL, member="UALICE", max_bytes=1000)) == GONE
    assert [c.args["file"] for c in fake.called("files.info")] == [deleted["id"], unseen["id"], "F99999999"]
    assert [c.status for c in fake.called("files.info")] == [200, 200, 200]


async def test_an_app_without_files_read_tells_the_admin_what_to_add(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake.share_file("UALICE", CHANNEL, "fox.png", b"\x89PNG")
    fake.without_scopes.add("files:read")
    files = files_of(fake)
    said = await refusal(files.fetch(LATEST, channel=CHANNEL, member="UALICE", max_bytes=1000))
    assert said == MISSING_SCOPE and "add the files:read scope" in said
    assert "lacks the files:read scope" in caplog.text


async def test_slacks_rate_limit_is_a_sentence_not_a_wait(fake: FakeSlack) -> None:
    shared = fake.share_file("UALICE", CHANNEL, "fox.png", b"\x89PNG")
    fake.storm(["files.info"], 1, retry_after=30)
    files = files_of(fake)
    said = await refusal(files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=1000))
    assert said == BUSY
    assert [c.status for c in fake.called("files.info")] == [429], "not retried"
    assert (await files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=1000)).data


async def test_the_fake_keeps_files_info_to_its_tier() -> None:
    """Tier 4 for files.info, twice files.list's Tier 3: past the burst, 429 with Retry-After."""
    limits = SlackLimits()
    fake = FakeSlack(limits=limits)
    await fake.start()
    try:
        shared = fake.share_file("UALICE", CHANNEL, "fox.png", b"\x89PNG")
        client = make_client(TOKEN, fake.api_url)
        files = SlackFiles(client, TOKEN, fake.api_url)
        fetched, said = 0, None
        while fetched < 100 and said is None:  # 100 a minute: far more than a few seconds' calls
            try:
                await files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=1000)
                fetched += 1
            except GenbotError as exc:
                said = exc.member_detail
        assert said == BUSY
        assert limits.update_burst <= fetched < 100
        assert fake.rate_limited["files.info"] == 1
        assert [c.status for c in fake.called("files.info")][-1] == 429
    finally:
        await fake.stop()


async def test_a_file_over_the_limit_is_refused_by_its_size_before_any_download(fake: FakeSlack) -> None:
    shared = fake.share_file("UALICE", CHANNEL, "huge.png", b"x" * 6000)
    files = files_of(fake)
    said = await refusal(files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=5000))
    assert said == "huge.png (6 kB) is too large: the limit is 5 kB."
    assert fake.called("download") == []


async def test_a_download_longer_than_its_size_said_stops_at_the_limit(fake: FakeSlack) -> None:
    shared = fake.share_file("UALICE", CHANNEL, "huge.png", b"x" * 50_000)
    fake.files[shared["id"]]["size"] = 1000  # Slack's size is not what is served
    files = files_of(fake)
    said = await refusal(files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=5000))
    assert said == "huge.png (50 kB) is too large: the limit is 5 kB.", "by its Content-Length"
    fake.stream_downloads = True  # no Content-Length: read until one byte past the limit
    said = await refusal(files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=5000))
    assert said == "huge.png is too large: the limit is 5 kB."


async def test_the_token_is_never_sent_off_slack(fake: FakeSlack) -> None:
    shared = fake.share_file("UALICE", CHANNEL, "linked.png", b"\x89PNG")
    elsewhere = fake.base_url.replace("127.0.0.1", "localhost")  # the same server, another host
    for key in ("url_private", "url_private_download"):
        fake.files[shared["id"]][key] = fake.files[shared["id"]][key].replace(fake.base_url, elsewhere)
    files = files_of(fake)
    said = await refusal(files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=1000))
    assert said.startswith("linked.png is not stored in Slack")
    assert fake.called("download") == []


async def test_slacks_sign_in_page_is_not_taken_for_the_file(fake: FakeSlack) -> None:
    """A token the file host does not take gets Slack's sign-in page (a redirect, then HTML)."""
    shared = fake.share_file("UALICE", CHANNEL, "fox.png", b"\x89PNG")
    files = files_of(fake, token="xoxb-another")
    said = await refusal(files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=1000))
    assert said.startswith("Slack did not hand over fox.png (it answered with its sign-in page)")
    assert [c.args["authorized"] for c in fake.called("download")] == [False]


async def test_a_file_slack_only_shows_as_a_tombstone_or_past_the_plans_limit_is_refused(
    fake: FakeSlack,
) -> None:
    files = files_of(fake)
    for mode, sentence in (
        ("tombstone", GONE),
        ("hidden_by_limit", "Slack no longer shows fox.png on this workspace's plan: share it again."),
    ):
        shared = fake.share_file("UALICE", CHANNEL, "fox.png", b"\x89PNG")
        fake.files[shared["id"]]["mode"] = mode
        said = await refusal(files.fetch(shared["id"], channel=CHANNEL, member="UALICE", max_bytes=1000))
        assert said == sentence
    assert fake.called("download") == []
