"""The neutral core: JobSpec and statuses, the error tree, config types, the adapter contract and
registry, translations and their reports, ids, logging and metrics. It imports nothing else of ours."""
