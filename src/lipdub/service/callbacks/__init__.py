"""Callbacks: the contract's wire bodies (``payloads``) and their sender (``sender``).

Layer: below ``context`` and the worker, above ``store`` and ``storage``. The store
queues deliveries in the transaction that ends a task but never builds a body: it is
handed ``payloads.WIRE`` (a ``store.outbox.CallbackFormat``) when it is opened.
"""
