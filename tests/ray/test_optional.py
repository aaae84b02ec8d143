"""Ray stays optional: the core never imports it, and covidcxr.ray says how to get it."""

from __future__ import annotations

import subprocess
import sys


def test_importing_covidcxr_and_its_ray_module_does_not_import_ray() -> None:
    code = (
        "import sys, covidcxr, covidcxr.pipeline, covidcxr.cli, covidcxr.pretrained, "
        "covidcxr.ray; print(sorted(m for m in sys.modules if m == 'ray' or "
        "m.startswith('ray.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.strip() == "[]"


def test_a_missing_ray_is_a_configuration_error_naming_the_extra() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import covidcxr.ray\n"
        "try:\n"
        "    with covidcxr.ray.connected():\n"
        "        pass\n"
        "except covidcxr.errors.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert "pip install 'covidcxr[ray]'" in done.stdout
