"""benchmarks/build_pretrained.py: its recorded rebuild command works as recorded, and what
packaging would refuse is refused before training, not after it."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from covidcxr.errors import OutputExistsError
from covidcxr.pretrained import default_root
from covidcxr.pretrained._shipping import check_packaging

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NAME = "covidqu-lungs-vgg19-128"  # shipped, so a rebuild replaces it


@pytest.fixture
def build_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/build_pretrained.py``, imported as a module."""
    script = BENCHMARKS / "build_pretrained.py"
    if not script.is_file():
        pytest.skip("benchmarks/ is not beside the tests (an installed sdist without it)")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("build_pretrained_under_test", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def models_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped models folder, standing in for the package's own."""
    root = Path(shutil.copytree(default_root(), tmp_path / "models"))
    monkeypatch.setattr("covidcxr.pretrained._shipping.default_root", lambda: root)
    return root


@pytest.mark.parametrize(
    "argv",
    [[NAME], [NAME, "--work", "/runs/build"], [NAME, "--force", "--threads", "4"]],
)
def test_the_recorded_rebuild_command_replaces_the_model_as_recorded(
    build_script: ModuleType,
    models_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    command = build_script.rebuild_command(argv)
    assert command.startswith("python benchmarks/build_pretrained.py ")
    recorded = shlex.split(command)[2:]
    assert recorded.count("--force") == 1
    # Run as recorded, while the model it rebuilds is in the package: packaging accepts it.
    monkeypatch.setattr(sys, "argv", ["build_pretrained.py", *recorded])
    args = build_script.parse_args()
    assert args.force
    assert (models_copy / NAME).is_dir()
    target = check_packaging(
        args.name,
        build_command=command,
        force=args.force,
        aliases=build_script.ALIASES.get(args.name, ()),
    )
    assert target == models_copy / NAME


def test_a_model_that_is_there_is_refused_before_training_without_force(
    build_script: ModuleType, models_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    for split in ("Train", "Val", "Test"):
        (data / split).mkdir(parents=True)

    class NoTraining:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("training started before packaging's refusals were checked")

    monkeypatch.setattr(build_script, "Pipeline", NoTraining)
    monkeypatch.setattr(build_script, "configure_tensorflow", lambda threads: None)
    monkeypatch.setattr(build_script, "source_revision", lambda: None)
    argv = ["build_pretrained.py", NAME, "--data", str(data), "--work", str(tmp_path / "work")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(OutputExistsError, match=rf"a model named '{NAME}' is already there"):
        build_script.main()
    assert sorted(p.name for p in models_copy.iterdir()) == sorted(
        p.name for p in default_root().iterdir()
    )
