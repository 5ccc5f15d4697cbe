"""make stack's object store: moto's S3 server, with its objects kept on disk.

moto keeps objects in memory and has no persistence of its own. Its recorder
logs requests to replay them into a new server, but a multipart upload's id is
random per server, so a replayed large upload (MLflow sends files over 8 MB in
parts) is lost, and the log keeps every request ever made. Here moto serves
as it does under `moto_server`, and before it answers a request that changed an
object (a put, a copy, a completed multipart upload, a delete), that object's
bytes and headers, or its deletion, are written under DIR; at start DIR is
loaded back into moto. So an object that a client was told is stored survives
the server's end, a kill included, and no client sees an object (in a listing
either) before it is on disk.

    python ops/s3_store.py --host 127.0.0.1 --port 9000 --dir .stack/s3

Path-style addressing only (`http://host:port/bucket/key`), which boto3 and
s3fs use for an endpoint given by IP address. DIR/<bucket>/bucket.json marks a
bucket; an object is DIR/<bucket>/objects/<sha256(key)[:2]>/<sha256(key)> with
its key, ETag and headers beside it in `<that>.json` (a key may be any string:
it never becomes a file name).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import sys
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path


class Persisting:
    """WSGI middleware around moto's app: a mutating S3 request is answered only once
    its effect on the objects is on disk; a write that fails is answered 500, so that
    the client does not take the object for stored."""

    def __init__(self, app, root: Path):
        self.app, self.root = app, root
        # Held from moto's change until its files are written, and by every read: a client
        # sees an object (a listing included) only once a kill of the store would keep it.
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        if method in ("GET", "HEAD", "OPTIONS"):
            with self.lock:
                return self.app(environ, start_response)
        bucket, key, query = _target(environ)
        body = _read_body(environ)  # off the socket before the lock: a slow client holds up no one
        said = []
        with self.lock:
            result = self.app(environ, lambda status, headers, exc_info=None: said.append((status, headers)))
            if not bucket or not said[-1][0].startswith("2"):
                start_response(*said[-1])
                return result
            try:
                self._record(method, bucket, key, query, body)
            except Exception as exc:  # noqa: BLE001 - any failure to keep it is the client's 500
                if hasattr(result, "close"):
                    result.close()
                print(f"s3_store: could not keep {bucket}/{key} on disk: {exc!r}", file=sys.stderr, flush=True)
                start_response("500 Internal Server Error", [("Content-Type", "application/xml")])
                return [b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
                        b"<Message>the store could not write the object to its disk</Message></Error>"]
        start_response(*said[-1])
        return result

    def _record(self, method: str, bucket: str, key: str, query: dict, body: bytes) -> None:
        if not key:
            if method == "PUT" and not query:
                backend = _backend(bucket)
                if backend is not None:
                    _save_bucket(self.root, bucket, backend.get_bucket(bucket).region_name)
            elif method == "DELETE" and not query:
                shutil.rmtree(self.root / bucket, ignore_errors=True)
            elif method == "POST" and "delete" in query:
                for k in ET.fromstring(body).iter():
                    if k.tag.rsplit("}", 1)[-1] == "Key" and k.text is not None:
                        _sync(self.root, bucket, k.text)
            return
        if "uploads" in query or ("uploadId" in query and method in ("PUT", "DELETE")):
            return  # a part, a new or an aborted multipart upload: no object changed yet
        _sync(self.root, bucket, key)


def _read_body(environ) -> bytes:
    """The request's whole body, read now and put back for moto to read."""
    length = environ.get("CONTENT_LENGTH")
    if length:
        body = environ["wsgi.input"].read(int(length))
    elif environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream
        body = environ["wsgi.input"].read()
    else:
        return b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _target(environ) -> tuple[str, str, dict]:
    """(bucket, key, query) as moto reads them from a path-style request: the path as it
    arrived, percent-decoded once."""
    raw = environ.get("RAW_URI") or environ.get("PATH_INFO") or "/"
    parsed = urllib.parse.urlsplit(raw)
    path = parsed.path if parsed.scheme else raw.split("?", 1)[0]
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    parts = urllib.parse.unquote(path).lstrip("/").split("/")
    return parts[0], "/".join(parts[1:]), query


def _backend(bucket: str):
    """moto's backend that holds `bucket`, or None."""
    from moto.s3.models import s3_backends

    where = s3_backends.bucket_accounts.get(bucket)
    if where is None:
        return None
    partition, account = where
    return s3_backends[account][partition]


def _files(root: Path, bucket: str, key: str) -> tuple[Path, Path]:
    h = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    folder = root / bucket / "objects" / h[:2]
    return folder / h, folder / f"{h}.json"


def _write(path: Path, data: bytes) -> None:
    """All of `data` at `path`, or `path` as it was: a kill mid-write leaves a temp file.
    The bytes reach the disk before the rename, so an object the client was told is
    stored survives a power cut too, not only a killed process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_bucket(root: Path, bucket: str, region: str) -> None:
    _write(root / bucket / "bucket.json", json.dumps({"name": bucket, "region": region}).encode())


def _sync(root: Path, bucket: str, key: str) -> None:
    """The files of `bucket`/`key` as moto now holds it: its bytes and headers, or none."""
    data, meta = _files(root, bucket, key)
    backend = _backend(bucket)
    obj = None if backend is None else backend.get_object(bucket, key)
    if obj is None:
        meta.unlink(missing_ok=True)  # the record first: bytes without one are ignored at load
        data.unlink(missing_ok=True)
        return
    if not (root / bucket / "bucket.json").is_file():
        _save_bucket(root, bucket, backend.get_bucket(bucket).region_name)
    _write(data, obj.value)
    _write(meta, json.dumps({"key": key, "etag": obj.etag.strip('"'), "metadata": dict(obj.metadata)}).encode())


def load(root: Path) -> tuple[int, int]:
    """Puts every bucket and object kept under `root` into moto; (buckets, objects)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    buckets = objects = 0
    for marker in sorted(root.glob("*/bucket.json")):
        spec = json.loads(marker.read_text())
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        backend.create_bucket(spec["name"], spec["region"])
        buckets += 1
        for meta in sorted((marker.parent / "objects").glob("*/*.json")):
            data = meta.with_suffix("")
            if not data.is_file():
                continue  # a write the store did not finish: its client was never told it was stored
            record = json.loads(meta.read_text())
            obj = backend.put_object(spec["name"], record["key"], data.read_bytes(), etag=record["etag"],
                                     disable_notification=True)
            obj.set_metadata(record["metadata"])
            objects += 1
    return buckets, objects


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, required=True)
    ap.add_argument("--dir", required=True, help="where the objects are kept")
    args = ap.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    buckets, objects = load(root)
    print(f"s3_store: {objects} objects in {buckets} buckets loaded from {root}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(args.host, args.port, Persisting(DomainDispatcherApplication(create_backend_app), root),
               threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
