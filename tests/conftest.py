"""Fixtures shared by the whole test suite.

Real data lives beside the repository in ``../shared/data`` (never copied into it). Point
``COVIDCXR_SHARED_DATA`` elsewhere to use another copy; tests that need it skip with a
reason when it is absent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["covidcxr.testing"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Where the shared real data is expected (``$COVIDCXR_SHARED_DATA`` or ``../shared/data``)."""
    return Path(os.environ.get("COVIDCXR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def covid_qu_ex_dir() -> Path:
    """The COVID-QU-Ex infection-segmentation data set, or a skip when it is absent."""
    path = shared_data_dir() / "covid-qu-ex"
    if not (path / "Train").is_dir():
        pytest.skip(
            f"real data not found at {path}: put the shared data beside the repository "
            "(../shared/data) or set COVIDCXR_SHARED_DATA"
        )
    return path


def users_folder(path: Path) -> Path:
    """A folder holding what a user keeps: it must survive every refused overwrite."""
    (path / "sub").mkdir(parents=True)
    (path / "thesis.txt").write_text("three years of work")
    (path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return path


def assert_untouched(path: Path) -> None:
    """What :func:`users_folder` wrote is all still there, unchanged."""
    assert (path / "thesis.txt").read_text() == "three years of work"
    assert (path / "sub" / "data.csv").read_text() == "a,b\n1,2\n"


def edit_archive_metadata(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a saved model archive's ``covidcxr.json`` with ``edit`` (in place).

    What the loaders' tests use to fake a damaged file or one saved by another covidcxr;
    every other member is copied as it was.
    """
    with zipfile.ZipFile(path) as archive:
        members = [(item, archive.read(item)) for item in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for item, data in members:
            if item.filename == "covidcxr.json":
                metadata = json.loads(data)
                edit(metadata)
                archive.writestr(item, json.dumps(metadata))
            else:
                archive.writestr(item, data)


def offline_environment(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine that cannot download anything: an empty Keras cache,
    and every HTTP(S) request sent to a proxy port that nothing listens on."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    dead = "http://127.0.0.1:9"
    env.update(
        KERAS_HOME=str(tmp_path / "keras"),
        HTTP_PROXY=dead,
        HTTPS_PROXY=dead,
        http_proxy=dead,
        https_proxy=dead,
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A loopback S3 server (moto in server mode), one for the session; tests make buckets."""
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


_HOLD = """
import sys, time
from covidcxr.files import checkpoint_lock
with checkpoint_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_in_another_process(folder: Path) -> subprocess.Popen[str]:
    """A process that holds ``folder``'s checkpoint lock until it is killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder
