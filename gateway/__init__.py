"""trainjob-gateway: one API for training jobs on Run:ai and ModelArts."""

__version__ = "0.1.0"
