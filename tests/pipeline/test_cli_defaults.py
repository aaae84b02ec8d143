"""The command line as a user meets it: offline defaults that learn, quiet output, advice."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from covidcxr.cli import cli, main
from covidcxr.phantoms import generate_phantoms, write_phantom_dataset
from covidcxr.pipeline import Pipeline

from ..conftest import offline_environment as shared_offline_environment

# What TensorFlow prints at start-up unless told not to ("failed call to cuInit" on
# machines without a GPU among them).
NOISE = ("cuInit", "TensorFlow", "tensorflow", "oneDNN", "absl", "cudart", "cuda")


def offline_environment(tmp_path: Path) -> dict[str, str]:
    """:func:`tests.conftest.offline_environment`, and TensorFlow's own log level unset."""
    env = shared_offline_environment(tmp_path)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


@pytest.mark.slow
def test_train_without_a_config_learns_offline_and_prints_no_tensorflow_noise(
    tmp_path: Path,
) -> None:
    data = write_phantom_dataset(tmp_path / "data", n_per_class=10, size=64, seed=0)
    model = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, "-m", "covidcxr", "train", str(data), "--out", str(model)],
        capture_output=True,
        text=True,
        env=offline_environment(tmp_path),
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not [line for line in lines if any(word in line for word in NOISE)], result.stderr
    notices = [line for line in lines if line.startswith("warning: ")]
    assert any("trains from scratch" in line for line in notices), result.stderr
    assert any("no lesion boxes or masks" in line for line in notices), result.stderr

    test = generate_phantoms(8, size=64, seed=7)
    predicted = Pipeline.load(model).predict(test)
    accuracy = np.mean([p.label == x.label for p, x in zip(predicted, test, strict=True)])
    assert accuracy > 0.5  # chance is 1/3


def test_a_weights_error_gives_command_line_advice_not_python(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_phantom_dataset(tmp_path / "data", n_per_class=2, size=32, seed=0)
    config = tmp_path / "pipeline.toml"
    missing = tmp_path / "missing.h5"
    config.write_text(
        f'[classifier]\nname = "vgg19"\ninput_size = 32\nweights = "{missing}"\n'
        '[detector]\nname = "none"\n'
    )
    argv = ["train", str(data), "--out", str(tmp_path / "model"), "--config", str(config)]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    (message,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert message.startswith("error: ")
    assert "weights=None" not in message
    assert 'weights = "none"' in message
    assert "--config" in message


@pytest.mark.parametrize(
    ("flags", "level"), [([], "WARNING"), (["-v"], "INFO"), (["-vv"], "DEBUG")]
)
def test_verbose_is_counted_and_sets_the_library_log_level(flags: list[str], level: str) -> None:
    logger = logging.getLogger("covidcxr")
    before = logger.level
    try:
        result = CliRunner().invoke(cli, [*flags, "plugins"])
        assert result.exit_code == 0, result.output
        assert logging.getLevelName(logger.level) == level
    finally:
        logger.setLevel(before)


def test_the_library_logger_prints_nothing_unless_configured() -> None:
    code = (
        "import logging, covidcxr; "
        "logging.getLogger('covidcxr.pipeline').warning('should not be shown')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stderr == ""


_REFUSAL_PROBE = """
import sys
from covidcxr.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    print("exit", exit.code)
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def _refusal(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``covidcxr ARGV`` offline in a fresh process, through :data:`_REFUSAL_PROBE`."""
    return subprocess.run(
        [sys.executable, "-c", _REFUSAL_PROBE, *argv],
        capture_output=True,
        text=True,
        env=offline_environment(tmp_path),
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("command", ["predict", "evaluate", "train", "demo"])
def test_an_existing_output_is_refused_before_tensorflow_is_imported(
    tmp_path: Path, command: str
) -> None:
    # The refusal should come at once: TensorFlow's import takes seconds.
    data = write_phantom_dataset(tmp_path / "data", n_per_class=1, size=32, seed=0)
    taken = tmp_path / "taken"
    if command == "predict":
        taken = tmp_path / "taken.csv"
        taken.write_text("mine\n", encoding="utf-8")
        args = ["predict", "covid-qu-ex", str(data), "--output", str(taken)]
    else:
        taken.mkdir()
        (taken / "mine.txt").write_text("mine\n", encoding="utf-8")
        args = {
            "evaluate": ["evaluate", "covid-qu-ex", str(data), "--report", str(taken)],
            "train": ["train", str(data), "--out", str(taken)],
            "demo": ["demo", "--out", str(taken)],
        }[command]
    result = _refusal(args, tmp_path)
    assert "exit 1" in result.stdout, result.stdout + result.stderr
    assert "tensorflow imported: False" in result.stdout, result.stdout
    assert str(taken) in result.stderr
    assert taken.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "covid-qu-exx", "{data}"], "covid-qu-exx: no such folder, nor a shipped"),
        (["predict", "covid-qu-ex", "{data}/nowhere"], "nowhere"),
        (["evaluate", "covid-qu-ex", "{data}/nowhere", "--report", "{tmp}/r"], "nowhere"),
        (["evaluate", "covid-qu-exx", "{data}", "--report", "{tmp}/r"], "covid-qu-exx: no such"),
        (["detect", "{data}", "--model", "covid-qu-exx", "--out", "{tmp}/b"], "covid-qu-exx"),
    ],
    ids=["predict-model", "predict-source", "evaluate-source", "evaluate-model", "detect-model"],
)
def test_a_mistyped_model_or_source_is_refused_before_tensorflow_is_imported(
    tmp_path: Path, args: list[str], message: str
) -> None:
    data = write_phantom_dataset(tmp_path / "data", n_per_class=1, size=32, seed=0)
    argv = [arg.format(data=data, tmp=tmp_path) for arg in args]
    result = _refusal(argv, tmp_path)
    assert "exit 1" in result.stdout, result.stdout + result.stderr
    assert "tensorflow imported: False" in result.stdout, result.stdout
    assert message in result.stderr
    if "shipped" in message:
        assert "covid-qu-ex)" in result.stderr  # the shipped models are listed
