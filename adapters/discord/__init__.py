"""The Discord adapter (discord.py 2.x): slash commands, status messages as embeds, persistent
buttons, and edits that outlive the 15-minute interaction token.

- :mod:`.embeds`: a :class:`~bot.models.StatusView` as an embed and buttons (pure).
- :mod:`.images`: the final image within the upload limit (pure).
- :mod:`.commands`: app_commands generated from :func:`bot.commands.command_specs`; payload to
  :class:`~bot.models.CommandRequest`.
- :mod:`.buttons`: the persistent Cancel button.
- :mod:`.adapter`: :class:`~bot.ports.ChatAdapter` and :class:`~bot.ports.Responder` over REST.
- :mod:`.client`: the sharded client that ties them together.
"""
