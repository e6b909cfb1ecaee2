"""Store-and-forward to the cloud: the upstream client, the outbox queue, the worker that
drains it, and the shared sync state. No Flask; the CLI, ``serve``'s background service and
GET /sync/status all call in here.
"""
