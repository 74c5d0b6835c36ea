"""Notification channels by name: one module each, each following ``channels.base.Notifier``."""

from __future__ import annotations

import importlib
from typing import cast

from notifications.channels.base import Notifier

CHANNELS = {"email": "notifications.channels.email", "webhook": "notifications.channels.webhook"}


def channel_for(name: str) -> Notifier:
    """The module that sends notifications of channel ``name``."""
    return cast(Notifier, importlib.import_module(CHANNELS[name]))
