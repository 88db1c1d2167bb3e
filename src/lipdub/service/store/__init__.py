"""The service's state: every SQL statement, behind the one ``Store`` facade.

Layer: above ``storage`` and ``retry`` only; nothing here knows HTTP, the worker or the
callback wire format (the callback format is handed in, see ``outbox.CallbackFormat``).
The facade is composed of one class per area (accounts and ledger, queue, finishing,
outbox, uploads, stats, fleet), so a method is found by what it is about; the schema is
``tables``, the engines and start-up migrations ``db``, the Alembic history
``migrations/``.
"""

from lipdub.service.store.base import (
    ACTIVE_STATES,
    DB_RETRY_S,
    DURATION_BOUNDS_MS,
    TASKS_CHANNEL,
    AccountExists,
    InsufficientBalance,
    Row,
    TooManyTasks,
    UnknownAccount,
    UploadQuota,
    hash_key,
    new_task_id,
)
from lipdub.service.store.facade import Store
from lipdub.service.store.limits import DownloadSlotsFull
from lipdub.service.store.outbox import BodyFor, CallbackFormat, DeliveryGate
from lipdub.service.store.queue import Submission

__all__ = [
    "ACTIVE_STATES",
    "DB_RETRY_S",
    "DURATION_BOUNDS_MS",
    "TASKS_CHANNEL",
    "AccountExists",
    "BodyFor",
    "CallbackFormat",
    "DeliveryGate",
    "DownloadSlotsFull",
    "InsufficientBalance",
    "Row",
    "Store",
    "Submission",
    "TooManyTasks",
    "UnknownAccount",
    "UploadQuota",
    "hash_key",
    "new_task_id",
]
