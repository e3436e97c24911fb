"""Drive a registered site: a `Transport` to reach it, a `Scheduler` to run jobs on it.

Importing this package is cheap on purpose: the local job runner
(`python -m sites.local.runner`) starts from it once per job.
"""
