"""Distributed preprocessing fills the cache that Pipeline runs then read."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray engine needs the extra: pip install 'covidcxr[ray]'")

import covidcxr.ray
from covidcxr import Pipeline

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_a_later_pipeline_run_reads_only_the_cache(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    preprocessor = Pipeline.load(tiny_model).preprocessor_
    assert preprocessor is not None
    filled = covidcxr.ray.preprocess(phantom_folder, preprocessor, cache, workers=2, batch_size=4)
    assert (filled.n_items, filled.written, filled.cached, filled.uncachable) == (12, 12, 0, 0)
    assert filled.skipped == ()

    warm = Pipeline.load(tiny_model, cache_dir=cache)
    predictions = warm.predict(phantom_folder)
    stats = warm.data_stats_
    assert stats.batch.cache_hits == 12
    assert stats.reads == 0  # unchanged files are known by their status alone
    cold = Pipeline.load(tiny_model).predict(phantom_folder)
    for warm_prediction, cold_prediction in zip(predictions, cold, strict=True):
        assert dict(warm_prediction.probabilities) == pytest.approx(
            dict(cold_prediction.probabilities), abs=1e-6
        )

    again = covidcxr.ray.preprocess(phantom_folder, preprocessor, cache, workers=1)
    assert (again.written, again.cached) == (0, 12)
