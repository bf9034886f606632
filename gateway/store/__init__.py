"""The job store: jobs, transitions and the webhook outbox, idempotency keys, leases."""
