"""``/ask prompt``: a question answered as text that streams into its status message; and
``/answerer``, which tells the whole channel what answers ``/ask``.

A genbot plugin written against :mod:`bot.api` only. Its answerer is a demo that runs anywhere: it
has no language model, and says so in every answer; it exists to show an answer streaming in, word
by word, through the queue, the status message and the cancel button that genbot gives every job.
A real plugin would call its text service where :func:`demo_answer` is.

Settings (``GENBOT_PLUGINS__ASK__*``): ``word_delay_s``, the time each word takes.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from bot.api import Call, Command, Job, JobKind, Option, Plugin, TextResult


class AskSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word_delay_s: float = Field(0.15, ge=0, le=10)


def demo_answer(question: str) -> str:
    """The demo's answer to ``question``: the same for any question, and honest about it."""
    return (
        f"You asked: {question}\n"
        "This is genbot's demo answerer. It has no language model, so it answers every question "
        "like this, one word at a time, to show an answer streaming into its status message. "
        "Point a real text plugin at your model to get real answers."
    )


async def answer(job: Job) -> TextResult:
    """Stream the answer to ``job.text`` into the status message, one word per ``word_delay_s``."""
    settings: AskSettings = job.settings
    words = demo_answer(job.text).split(" ")
    for count in range(1, len(words) + 1):
        await asyncio.sleep(settings.word_delay_s)
        await job.progress(count, len(words), text=" ".join(words[:count]))
    return TextResult(" ".join(words))


async def answerer(call: Call) -> str:
    """``/answerer``: what answers ``/ask`` here, told to the whole channel."""
    delay: float = call.settings.word_delay_s
    return f"/ask is answered by genbot's demo answerer (no language model), one word every {delay:g} s."


plugin = Plugin(
    name="ask",
    commands=(
        Command(
            "ask",
            "Ask a question; the answer streams into the message",
            (Option("prompt", "string", "Your question", required=True),),
            job="ask",
        ),
        Command("answerer", "Tell the channel what answers /ask", run=answerer, public=True),
    ),
    jobs=(JobKind("ask", answer, verb="Answering", backend="ask-demo"),),
    settings=AskSettings,
)
