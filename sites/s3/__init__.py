"""Data handoff between sites through an S3-compatible object store.

Modules: `handoff` (signed URLs, multipart; boto3), `scripts` (the curl scripts a site runs).
"""

from __future__ import annotations

from sites.s3.handoff import S3Handoff

__all__ = ["S3Handoff"]
