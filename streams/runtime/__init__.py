"""The worker: the Faust app, the handlers, checkpoints, the alert outbox, metrics and health.

The only code that runs Faust; Faust's private attributes are touched in faust_adapter alone.
"""
