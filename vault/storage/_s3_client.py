"""The S3 store's HTTP side: a urllib3 pool that fails fast, and the minio client that signs
media parts as ``UNSIGNED-PAYLOAD`` (private to :mod:`vault.storage.s3`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlunsplit

import certifi
import minio
import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.signer import sign_v4_s3
from urllib3.util import Retry, Timeout


def make_http_client(
    *, connect_timeout: float = 3.0, read_timeout: float = 30.0, retries: int = 2
) -> urllib3.PoolManager:
    """A urllib3 pool that gives up quickly on a dead endpoint.

    minio's own default waits 5 minutes per attempt and retries 5 times, which turns a stopped
    server into a hung request instead of a 503.
    """
    return urllib3.PoolManager(
        timeout=Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(
            total=retries,
            connect=retries,
            read=1,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
        ),
    )


# Bodies this large are media parts (ciphertext), sent with UNSIGNED-PAYLOAD; see _Client.
UNSIGNED_FROM = 1 << 20


class _Client(minio.Minio):
    """minio, except that a media part over plain HTTP is signed as ``UNSIGNED-PAYLOAD`` instead
    of with its SHA-256 (as minio already does over HTTPS, and as AWS documents for both): that
    hash was a fifth of ingest's CPU (issue #12). What is sent is AEAD ciphertext, every
    segment authenticated at read time; its SHA-256 is computed once, recorded at ingest and
    re-checked by the scrub. Small bodies (XML requests) keep their payload hash."""

    def _build_headers(  # type: ignore[override]
        self,
        host: str,
        headers: dict[str, Any] | None = None,
        body: bytes | None = None,
        creds: Any = None,
    ) -> tuple[dict[str, Any], datetime]:
        if body is None or len(body) < UNSIGNED_FROM or creds is None or self._base_url.is_https:
            return super()._build_headers(host, headers, body, creds)  # type: ignore[no-any-return]
        built, date = super()._build_headers(host, headers, None, creds)
        built["Content-Length"] = str(len(body))
        built["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        return built, date

    def put_streaming(
        self, bucket: str, key: str, body: Iterable[bytes], length: int
    ) -> str | None:
        """PUT exactly ``length`` bytes of ``body`` in one request, each chunk sent as it comes;
        the version id.

        The body can be read once only, so this request is never retried (urllib3's pool
        retries would replay an exhausted iterator); the caller's upload fails instead. If
        ``body`` raises, urllib3 closes the connection with the object short of its declared
        length, and S3 stores nothing.
        """
        region = self._get_region(bucket)
        url = self._base_url.build(method="PUT", region=region, bucket_name=bucket, object_name=key)
        creds = self._provider.retrieve() if self._provider else None
        headers, date = super()._build_headers(
            url.netloc, {"Content-Type": "application/octet-stream"}, None, creds
        )
        headers["Content-Length"] = str(length)
        if creds is not None:
            headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
            headers = sign_v4_s3(
                method="PUT", url=url, region=region, headers=headers, credentials=creds,
                content_sha256="UNSIGNED-PAYLOAD", date=date,
            )  # fmt: skip
        response = self._http.urlopen(
            "PUT", urlunsplit(url), body=body, headers=headers, retries=False
        )
        if response.status == 200:
            return response.headers.get("x-amz-version-id")
        content_type = response.headers.get("content-type", "")
        if response.data and "application/xml" in content_type.split(";"):
            raise S3Error.fromxml(response)
        if response.status >= 500:
            raise ServerError(
                f"server failed with HTTP status code {response.status}", response.status
            )
        raise InvalidResponseError(response.status, content_type, None)
