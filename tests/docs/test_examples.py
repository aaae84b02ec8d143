"""Every Python example in the README and the Sphinx pages runs, as written.

Each page's Python blocks (``.. code-block:: python`` in reStructuredText, fenced
``python`` blocks in Markdown) run in order in one namespace, as a reader would type them,
in a fresh copy of a folder holding the files the examples name (:mod:`sandbox`). Blocks
with a ``:caption:`` that names a file (``src/covidcxr_brightspot/__init__.py``,
``test_plugin.py``) are written to that file instead, as the page tells the reader to do;
a page's ``test_*.py`` files are then run with pytest. ``cos://`` examples reach a loopback
S3 server and Watson examples a loopback Visual Recognition v4 server, through the
environment variables the library documents; nothing leaves 127.0.0.1.

Pages whose console examples matter are covered by the CLI tests; ``.. doctest::`` blocks
are run by ``sphinx-build -b doctest`` (``nox -s docs``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator

from covidcxr.detect import LoopbackWatsonServer
from covidcxr.testing import registered_plugin

from . import sandbox

ROOT = Path(__file__).resolve().parents[2]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst")))
BUCKET = "my-bucket"


@attrs.frozen
class Block:
    """One Python example: where it is, its code, and the file its caption names, if any."""

    page: Path
    line: int
    code: str
    caption: str | None = None
    language: str = "python"


_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. code-block:: (?P<language>python|toml)\s*$")
_OPTION = re.compile(r"^\s+:(?P<name>[\w-]+):\s*(?P<value>.*)$")


def rst_blocks(page: Path) -> list[Block]:
    """The ``.. code-block:: python`` blocks of a reStructuredText page."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if match is None:
            index += 1
            continue
        start, index = index + 1, index + 1
        caption = None
        while index < len(lines) and (option := _OPTION.match(lines[index])):
            if option["name"] == "caption":
                caption = option["value"].strip()
            index += 1
        body: list[str] = []
        base = len(match["indent"])
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > base
        ):
            body.append(lines[index])
            index += 1
        code = _dedent("\n".join(body))
        blocks.append(Block(page, start, code, caption, match["language"]))
    return blocks


def markdown_blocks(page: Path) -> list[Block]:
    """The fenced ``python`` blocks of a Markdown page."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() != "```python":
            index += 1
            continue
        start, index = index + 1, index + 1
        body = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        blocks.append(Block(page, start + 1, "\n".join(body)))
        index += 1
    return blocks


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip("\n") + "\n"


def page_blocks(page: Path) -> list[Block]:
    """The Python examples (and TOML files) of one page, in order."""
    return markdown_blocks(page) if page.suffix == ".md" else rst_blocks(page)


EXAMPLE_PAGES = [
    page for page in PAGES if any(block.language == "python" for block in page_blocks(page))
]


# -- the world the examples run in ---------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sandbox.build(tmp_path_factory.mktemp("docs-sandbox"))


@pytest.fixture
def world(
    sandbox_template: Path,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """A fresh copy of the sandbox as the working directory, services in the environment."""
    from covidcxr.sources import cos_client, upload_folder

    here = shutil.copytree(sandbox_template, tmp_path / "work")
    monkeypatch.chdir(here)
    monkeypatch.setenv("COS_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("COS_HMAC_ACCESS_KEY_ID", "AKIDDOCSEXAMPLE00001")
    monkeypatch.setenv("COS_HMAC_SECRET_ACCESS_KEY", "docs-example-secret")
    monkeypatch.delenv("COS_API_KEY_ID", raising=False)
    client = cos_client()
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
        upload_folder(here / "data" / "cxr", f"{BUCKET}/datasets/cxr")
    with LoopbackWatsonServer(apikey="docs-example-apikey") as watson:
        collection = watson.add_collection("covid-opacities")
        monkeypatch.setenv("COVIDCXR_WATSON_URL", watson.url)
        monkeypatch.setenv("COVIDCXR_WATSON_IAM_URL", watson.url)
        monkeypatch.setenv("COVIDCXR_WATSON_APIKEY", watson.apikey)
        monkeypatch.setenv("COVIDCXR_WATSON_COLLECTION_IDS", collection)
        # A gateway that issues its own tokens: here, one the loopback IAM endpoint issued.
        iam = IAMAuthenticator(watson.apikey, url=watson.url)
        monkeypatch.setenv("VISION_GATEWAY_TOKEN", iam.token_manager.get_token())
        yield here


def _run_tests(files: list[Path], here: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here / "src"), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, files)],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def _install(pyproject: str, here: Path, stack: contextlib.ExitStack) -> None:
    """What ``pip install`` of a page's package does for covidcxr: load its entry points."""
    entry_points = tomllib.loads(pyproject).get("project", {}).get("entry-points", {})
    for name, module_name in entry_points.get("covidcxr", {}).items():
        module = importlib.import_module(module_name)
        assert str(module.__file__).startswith(str(here)), module.__file__
        stack.enter_context(registered_plugin(module, name=name))


@pytest.mark.slow
@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_page_examples_run_as_written(page: Path, world: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__docs_example__"}
    written: list[Path] = []
    modules_before = set(sys.modules)
    sys.path.insert(0, str(world / "src"))
    try:
        with contextlib.ExitStack() as stack:
            for block in page_blocks(page):
                where = f"{block.page.relative_to(ROOT)}:{block.line}"
                if block.caption is not None:
                    target = world / block.caption
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(block.code, encoding="utf-8")
                    written.append(target)
                    if target.name == "pyproject.toml":
                        _install(block.code, world, stack)
                    continue
                if block.language != "python":
                    continue
                try:
                    exec(compile(block.code, where, "exec"), namespace)  # noqa: S102
                except Exception as exc:
                    raise AssertionError(f"the example at {where} failed: {exc!r}") from exc
            tests = [path for path in written if path.name.startswith("test_")]
            if tests:
                _run_tests(tests, world)
    finally:
        sys.path.remove(str(world / "src"))
        for name in set(sys.modules) - modules_before:
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(world)):
                del sys.modules[name]


def test_every_page_with_python_examples_is_collected() -> None:
    # The parser must not silently find nothing: these pages are known to hold examples.
    names = {page.name for page in EXAMPLE_PAGES}
    assert {"README.md", "data.rst", "pipeline.rst", "plugins.rst"} <= names
