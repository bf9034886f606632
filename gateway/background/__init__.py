"""Background work: status sync, external-job import, webhook delivery, replica leases."""
