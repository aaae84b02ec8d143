"""The command line's foundation: version, plugin listing, and error handling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import covidcxr
from covidcxr.cli import cli, main
from covidcxr.hookspecs import Register


class ListedPlugin:
    @covidcxr.hookimpl
    def covidcxr_register_preprocessors(self, register: Register) -> None:
        register("identity", lambda: lambda xray: xray)


def test_version_option_prints_the_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"covidcxr, version {covidcxr.__version__}"


def test_plugins_lists_each_entry_with_its_plugin(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(ListedPlugin(), name="listed")
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    section = lines.index("preprocessors:")
    assert any(line.split() == ["identity", "from", "listed"] for line in lines[section + 1 :]), (
        result.output
    )


def test_plugins_lists_an_installed_plugin_that_could_not_load_and_works_without_it(
    fake_distribution: Callable[..., None],
) -> None:
    fake_distribution("broken", "covidcxr_broken_cli_plugin", "raise ImportError('no numpy 9')\n")
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert ["local", "from", "covidcxr.detect.plugin"] in [
        line.split() for line in result.output.splitlines()
    ]
    left_out = result.output.split("left out (could not load):\n", 1)[1]
    assert left_out.startswith("  broken: importing covidcxr_broken_cli_plugin failed")
    assert "no numpy 9" in left_out


def test_library_errors_exit_non_zero_with_a_one_line_message(
    covidcxr_plugin: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken:
        @covidcxr.hookimpl
        def covidcxr_register_detectors(self, register: Register) -> None:
            raise RuntimeError("boom")

    covidcxr_plugin(Broken(), name="broken")
    with pytest.raises(SystemExit) as exited:
        main(["plugins"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.startswith("error: plugin 'broken' raised")


def test_the_console_prints_a_warning_in_its_own_words_when_it_has_them() -> None:
    import io

    from covidcxr._logging import _one_line_warning
    from covidcxr.sources import SkippedItemsWarning

    stream = io.StringIO()
    skipped = SkippedItemsWarning.of("scans: skipped 1 of 4 item(s)", "see skipped")
    _one_line_warning(skipped, SkippedItemsWarning, "x.py", 1, stream)
    _one_line_warning(UserWarning("plain"), UserWarning, "x.py", 1, stream)
    assert str(skipped) == "scans: skipped 1 of 4 item(s); see skipped"
    assert stream.getvalue() == "warning: scans: skipped 1 of 4 item(s)\nwarning: plain\n"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("max_pixels=abc", "max_pixels must be a whole number of at least 1, got 'abc'"),
        ("label_aliases=5", "label_aliases must be a mapping of folder names to labels, got 5"),
    ],
)
def test_a_source_option_of_the_wrong_kind_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, message: str
) -> None:
    (tmp_path / "COVID").mkdir()
    with pytest.raises(SystemExit) as exited:
        main(["predict", "covid-qu-ex", str(tmp_path), "-s", option])
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize(
    ("flag", "option", "pair"),
    [
        ("-s", "--source-option", "aws_secret_access_key:s3cr3t+Do/Not=Leak"),
        ("-s", "--source-option", "=s3cr3t+Do/Not=Leak"),
        ("-d", "--detector-option", "apikey:s3cr3t+Do/Not=Leak"),
    ],
)
def test_an_option_that_is_not_key_value_is_refused_without_repeating_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, option: str, pair: str
) -> None:
    # A ":" typed for "=" puts the secret in what would be echoed, on stderr and in logs.
    argv = ["detect", str(tmp_path), "--out", str(tmp_path / "out"), "--detector", "watson"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, flag, "layout=classes", flag, pair])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"Invalid value for {option}: value 2 of 2 is not KEY=VALUE with KEY" in err
    assert "s3cr3t" not in err


def test_an_image_over_the_pixel_limit_is_refused_with_the_option_to_raise_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # declares 10 GB
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(SystemExit) as exited:
        main(["predict", "covid-qu-ex", str(tmp_path / "bomb.png")])
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert "raise it with -s max_pixels=N if it is genuine" in err
    assert "raise max_pixels" not in err
