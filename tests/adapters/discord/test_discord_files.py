"""Where genbot downloads a Discord attachment from, and the name it keeps. Pure."""

from __future__ import annotations

import pytest

from adapters.discord.files import attachment_name, may_fetch

API = "http://127.0.0.1:8123/api/v10"


@pytest.mark.parametrize(
    ("url", "fetched"),
    [
        ("https://cdn.discordapp.com/attachments/1/2/fox.png?ex=1&is=2&hm=3&", True),
        ("https://media.discordapp.net/attachments/1/2/fox.png", True),
        ("http://127.0.0.1:8123/attachments/1/2/fox.png", True),  # the configured API's own host
        ("http://cdn.discordapp.com/attachments/1/2/fox.png", False),  # not HTTPS
        ("https://cdn.discordapp.com.evil.example/fox.png", False),
        ("https://evildiscordapp.com/fox.png", False),
        ("https://user:secret@cdn.discordapp.com/fox.png", False),
        ("http://127.0.0.1:6379/", False),  # the same host, another port: Redis
        ("http://127.0.0.1:99999999/", False),
        ("file:///etc/passwd", False),
        ("fox.png", False),
    ],
)
def test_only_discords_hosts_are_fetched(url: str, fetched: bool) -> None:
    assert may_fetch(url, API) is fetched


def test_the_name_is_the_links_last_segment_unquoted() -> None:
    url = "https://cdn.discordapp.com/attachments/1/2/fox%20in%20snow.png?ex=1&hm=2"
    assert attachment_name(url) == "fox in snow.png"
    assert attachment_name("https://cdn.discordapp.com/") == "file"
