"""Where slot certificates and the ACME account live: encrypted, shared by the fleet.

Two stores, one interface (``get(name) -> text | None``, ``put(name, text)``), chosen by
``--cert-store``:

* ``secretsmanager`` (default): one secret per entry, named ``{prefix}{name}``, encrypted by
  Secrets Manager with ``--kms-key-id`` (default: the account's ``aws/secretsmanager`` key).
* ``s3``: one object per entry, ``s3://{bucket}/{prefix}{name}.json``, written with SSE-KMS
  (``--kms-key-id``, default: the bucket's ``aws/s3`` key).

Entry names: ``cert/{slot}.{relay domain}`` for a slot's certificate and private key, and
``acme-account/{directory}`` for the ACME account key (one account per ACME directory, shared by the
fleet). Values are JSON text (``relay_node.control.aws.certs`` defines them). Blocking boto3; endpoints from
the SDK's configuration (``AWS_ENDPOINT_URL[_SECRETS_MANAGER|_S3]``).
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import boto3
from botocore.exceptions import ClientError

_SECRET_NAME_BAD = re.compile(r"[^A-Za-z0-9/_+=.@-]")


class CertStore(Protocol):
    def get(self, name: str) -> str | None: ...

    def put(self, name: str, text: str) -> None: ...


def safe_name(text: str) -> str:
    """``text`` with every character a secret name or object key should not hold replaced by ``-``."""
    return _SECRET_NAME_BAD.sub("-", text)


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class SecretsManagerStore:
    def __init__(self, prefix: str = "polysocket/", kms_key_id: str = "", client: Any = None) -> None:
        self.prefix = prefix
        self.kms_key_id = kms_key_id
        self.client = client if client is not None else boto3.session.Session().client("secretsmanager")

    def secret_id(self, name: str) -> str:
        return safe_name(self.prefix + name)

    def get(self, name: str) -> str | None:
        try:
            answer = self.client.get_secret_value(SecretId=self.secret_id(name))
        except ClientError as e:
            if _code(e) == "ResourceNotFoundException":
                return None
            raise
        value = answer.get("SecretString")
        return str(value) if value is not None else None

    def put(self, name: str, text: str) -> None:
        secret_id = self.secret_id(name)
        try:
            self.client.put_secret_value(SecretId=secret_id, SecretString=text)
            return
        except ClientError as e:
            if _code(e) != "ResourceNotFoundException":
                raise
        extra = {"KmsKeyId": self.kms_key_id} if self.kms_key_id else {}
        try:
            self.client.create_secret(Name=secret_id, SecretString=text, Description="polysocket relay TLS material",
                                      **extra)
        except ClientError as e:
            if _code(e) != "ResourceExistsException":
                raise
            # created by another node since our put failed: write our value over it
            self.client.put_secret_value(SecretId=secret_id, SecretString=text)


class S3Store:
    def __init__(self, bucket: str, prefix: str = "polysocket/", kms_key_id: str = "", client: Any = None) -> None:
        if not bucket:
            raise ValueError("the s3 certificate store needs a bucket")
        self.bucket = bucket
        self.prefix = prefix
        self.kms_key_id = kms_key_id
        self.client = client if client is not None else boto3.session.Session().client("s3")

    def key(self, name: str) -> str:
        return safe_name(self.prefix + name) + ".json"

    def get(self, name: str) -> str | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404"):
                return None
            raise
        body: bytes = answer["Body"].read()
        return body.decode()

    def put(self, name: str, text: str) -> None:
        extra = {"SSEKMSKeyId": self.kms_key_id} if self.kms_key_id else {}
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=text.encode(),
                               ContentType="application/json", ServerSideEncryption="aws:kms", **extra)


def open_store(kind: str, *, prefix: str, bucket: str = "", kms_key_id: str = "", client: Any = None) -> CertStore:
    if kind == "secretsmanager":
        return SecretsManagerStore(prefix, kms_key_id, client)
    if kind == "s3":
        return S3Store(bucket, prefix, kms_key_id, client)
    raise ValueError(f"unknown certificate store {kind!r} (secretsmanager or s3)")
