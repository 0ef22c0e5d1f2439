"""An S3-compatible object store for barman:cloud in the lab: moto's server mode, listening
on the lab's own bridge address (the salt-master's), which every lab host reaches. It keeps
what it stores in memory and stops with the lab's test module."""

import pathlib
import socket
import subprocess
import sys

from lab.scenario import wait_for

BIN = pathlib.Path(sys.executable).parent
# moto accepts any key pair; the formula must still pass one (from the pillar).
ACCESS_KEY_ID = "LABACCESSKEY0001"
SECRET_ACCESS_KEY = "lab-secret-access-key"  # noqa: S105 (a throw-away lab value)


def _free_port(address):
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class ObjectStore:
    """``with ObjectStore(address, log) as store``: moto's S3 on ``address``, with ``bucket``."""

    def __init__(self, address, log, bucket="pg-backups"):
        self.address, self.log, self.bucket = address, pathlib.Path(log), bucket
        self.port = _free_port(address)
        self.endpoint_url = f"http://{address}:{self.port}"
        self._process = None

    def __enter__(self):
        with open(self.log, "ab") as out:
            self._process = subprocess.Popen(  # pylint: disable=consider-using-with
                [str(BIN / "moto_server"), "-H", self.address, "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            if not wait_for(self._answers, 60, interval=0.5):
                raise RuntimeError(f"moto_server did not answer on {self.endpoint_url}: see {self.log}")
            self.client().create_bucket(Bucket=self.bucket)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _answers(self):
        if self._process.poll() is not None:
            raise RuntimeError(f"moto_server exited ({self._process.returncode}): see {self.log}")
        try:
            with socket.create_connection((self.address, self.port), timeout=1):
                return True
        except OSError:
            return False

    def client(self):
        import boto3  # pylint: disable=import-outside-toplevel

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name="us-east-1",
        )

    def keys(self, prefix=""):
        """Every object key under ``prefix`` in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def pillar(self, prefix="lab"):
        """barman:cloud for this store."""
        return {
            "destination": f"s3://{self.bucket}/{prefix}",
            "endpoint_url": self.endpoint_url,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
        }
