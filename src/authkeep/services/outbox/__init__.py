"""The transactional outbox: one queue for every message authkeep sends (emails and
webhooks), written in the transaction of the change that causes it and delivered by workers.

* :class:`Outbox` — enqueue on the caller's connection;
* :class:`OutboxWorker` — claim, deliver, retry with :class:`Backoff` (or a kind's
  :class:`RetrySchedule`), give up (dead);
* :class:`HandlerRegistry` — a :class:`Handler` per message kind;
* :class:`Delivery` (``authkeep.services.delivery``) wires them for a running authkeep.

See ``docs/email.md`` for the guarantees.
"""

from authkeep.db.outbox import ClaimedMessage
from authkeep.services.outbox.backoff import Backoff, RetrySchedule
from authkeep.services.outbox.handlers import (
    DeliveryError,
    Handler,
    HandlerRegistry,
    PermanentDeliveryError,
)
from authkeep.services.outbox.queue import Outbox
from authkeep.services.outbox.worker import OutboxWorker

__all__ = [
    "Backoff",
    "ClaimedMessage",
    "DeliveryError",
    "Handler",
    "HandlerRegistry",
    "Outbox",
    "OutboxWorker",
    "PermanentDeliveryError",
    "RetrySchedule",
]
