"""S3-compatible object stores near the sites (LUMI-O, Allas, ...), through boto3.

Data moves site -> bucket -> site without passing through the control machine, and no
credential ever reaches a site: the control machine signs short-lived URLs (from the
site's AWS *profile*), and the sites run `curl` on them. Files above `PART_SIZE` go up
as multipart uploads, one signed URL per part. boto3/botocore errors are translated
into `TransferError` here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from registry.site import S3Store
from sites.errors import TransferError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART_SIZE = 64 * 1024 * 1024
URL_LIFETIME_SECONDS = 6 * 3600
_TRANSIENT_CODES = {
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


@contextmanager
def s3_errors(site: str, action: str) -> Iterator[None]:
    """Translate boto3/botocore failures into TransferError (transient when retrying helps)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        ProfileNotFound,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    try:
        yield
    except (ProfileNotFound, NoCredentialsError) as exc:
        raise TransferError(site, f"S3: cannot {action}: {exc}", transient=False) from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        raise TransferError(
            site, f"S3: cannot {action}: {code or exc}", transient=code in _TRANSIENT_CODES
        ) from None
    except BotoConnectionError as exc:
        raise TransferError(site, f"S3: cannot {action}: {exc}", transient=True) from None
    except BotoCoreError as exc:
        raise TransferError(site, f"S3: cannot {action}: {exc}", transient=False) from None


def s3_client(store: S3Store) -> S3Client:
    """A client for the store, with credentials from its named profile (never stored)."""
    import boto3
    from botocore.config import Config

    session = boto3.Session(profile_name=store.profile) if store.profile else boto3.Session()
    return session.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name=store.region or "us-east-1",
        config=Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}),
    )


@dataclass(frozen=True)
class FileUpload:
    """How one file goes up: one signed PUT, or signed parts of a multipart upload."""

    path: str  # relative to the uploaded directory
    key: str
    size: int
    put_url: str | None = None
    upload_id: str | None = None
    part_urls: tuple[str, ...] = ()


class S3Handoff:
    """Signed transfers through one bucket, for one site's store."""

    def __init__(self, site: str, store: S3Store, client: Any | None = None) -> None:
        self.site = site
        self.store = store
        with s3_errors(site, f"open the S3 store {store.bucket!r} (profile {store.profile!r})"):
            self.client = client or s3_client(store)

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.store.prefix, *parts) if p.strip("/"))

    def plan_upload(self, prefix: str, sizes: Mapping[str, int]) -> list[FileUpload]:
        uploads = []
        with s3_errors(self.site, f"prepare uploads to {self.store.bucket}"):
            for path, size in sorted(sizes.items()):
                key = f"{prefix}/{path}"
                if size <= PART_SIZE:
                    url = self._sign("put_object", Key=key)
                    uploads.append(FileUpload(path, key, size, put_url=url))
                    continue
                upload_id = self.client.create_multipart_upload(Bucket=self.store.bucket, Key=key)[
                    "UploadId"
                ]
                parts = tuple(
                    self._sign("upload_part", Key=key, UploadId=upload_id, PartNumber=n)
                    for n in range(1, math.ceil(size / PART_SIZE) + 1)
                )
                uploads.append(FileUpload(path, key, size, upload_id=upload_id, part_urls=parts))
        return uploads

    def complete(self, upload: FileUpload, etags: Mapping[int, str]) -> None:
        if upload.upload_id is None:
            return
        missing = [n for n in range(1, len(upload.part_urls) + 1) if n not in etags]
        if missing:
            self.abort(upload)
            raise TransferError(
                self.site,
                f"S3: part {missing[0]} of {upload.path} did not report an ETag",
                transient=True,
            )
        with s3_errors(self.site, f"complete the upload of {upload.path}"):
            self.client.complete_multipart_upload(
                Bucket=self.store.bucket,
                Key=upload.key,
                UploadId=upload.upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
                },
            )

    def abort(self, upload: FileUpload) -> None:
        if upload.upload_id is None:
            return
        with s3_errors(self.site, f"abort the upload of {upload.path}"):
            self.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=upload.key, UploadId=upload.upload_id
            )

    def download_url(self, key: str) -> str:
        with s3_errors(self.site, f"sign a download of {key}"):
            return self._sign("get_object", Key=key)

    def _sign(self, operation: str, **params: Any) -> str:
        url: str = self.client.generate_presigned_url(
            operation,
            Params={"Bucket": self.store.bucket, **params},
            ExpiresIn=URL_LIFETIME_SECONDS,
        )
        return url
