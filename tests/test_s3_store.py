"""make stack's object store (ops/s3_store.py) in this process: moto's real S3 app
behind the middleware that keeps objects on disk, driven over WSGI."""
from __future__ import annotations

import sys
import threading
import uuid
from pathlib import Path

import pytest
from werkzeug.test import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ops"))
import s3_store  # noqa: E402


@pytest.fixture
def store(tmp_path):
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # not at collection, in every worker

    app = s3_store.Persisting(DomainDispatcherApplication(create_backend_app), tmp_path)
    bucket = f"b-{uuid.uuid4().hex[:12]}"  # moto's objects live in this process: a bucket of this test's own
    assert Client(app).put(f"/{bucket}").status_code == 200
    return app, bucket, tmp_path


def test_an_object_is_listed_only_once_it_is_on_disk(store, monkeypatch):
    """A listing that comes while an object's files are being written waits for them:
    what a client has seen is what a kill of the store keeps."""
    app, bucket, root = store
    writing, release = threading.Event(), threading.Event()
    write = s3_store._write

    def slow_write(path, data):
        writing.set()
        assert release.wait(30)
        write(path, data)

    monkeypatch.setattr(s3_store, "_write", slow_write)
    put = threading.Thread(target=lambda: Client(app).put(f"/{bucket}/a/key", data=b"bytes"))
    put.start()
    assert writing.wait(30)
    listings: list[str] = []
    lister = threading.Thread(target=lambda: listings.append(Client(app).get(f"/{bucket}?list-type=2").text))
    lister.start()
    lister.join(0.5)
    assert lister.is_alive() and not listings  # moto holds the object; the disk does not yet
    release.set()
    put.join(30)
    lister.join(30)
    assert "<Key>a/key</Key>" in listings[0]
    assert s3_store._files(root, bucket, "a/key")[0].read_bytes() == b"bytes"


def test_a_failed_write_is_answered_500(store, monkeypatch):
    app, bucket, _ = store

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(s3_store, "_write", full_disk)
    answer = Client(app).put(f"/{bucket}/k", data=b"x")
    assert answer.status_code == 500 and b"could not write the object to its disk" in answer.data
