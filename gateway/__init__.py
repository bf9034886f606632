"""trainjob-gateway: one API for training jobs on Run:ai and ModelArts."""

__version__ = "0.1.0"
# Seconds a client (the CLI, gateway.client) waits for the gateway's answer: longer than the gateway's inline
# submit (15 s), short enough to notice a hang.
DEFAULT_TIMEOUT = 60.0
