"""Classification metrics: hand-computed cases, conventions, and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError
from covidcxr.evaluate import classification_metrics

CLASSES = ("covid-19", "normal", "pneumonia")


def onehot_probabilities(
    predicted: list[int], k: int = 3, confidence: float = 0.8
) -> NDArray[np.float64]:
    rest = (1.0 - confidence) / (k - 1)
    probs = np.full((len(predicted), k), rest)
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


# Ground truth and predictions for a worked example, counted by hand:
#   true covid-19 x4 -> predicted covid, covid, covid, normal
#   true normal   x3 -> predicted normal, normal, pneumonia
#   true pneumonia x3 -> predicted pneumonia, covid, pneumonia
TRUE = ["covid-19"] * 4 + ["normal"] * 3 + ["pneumonia"] * 3
PRED = [0, 0, 0, 1, 1, 1, 2, 2, 0, 2]


def worked_example() -> object:
    return classification_metrics(TRUE, onehot_probabilities(PRED), CLASSES, n_bootstrap=0)


def test_confusion_matrix_counts_true_rows_and_predicted_columns() -> None:
    m = classification_metrics(TRUE, onehot_probabilities(PRED), CLASSES, n_bootstrap=0)
    assert m.confusion_matrix == ((3, 1, 0), (0, 2, 1), (1, 0, 2))


def test_per_class_scores_match_hand_computation() -> None:
    m = classification_metrics(TRUE, onehot_probabilities(PRED), CLASSES, n_bootstrap=0)
    covid = m.scores("covid-19")
    # covid: TP 3, FP 1 (a pneumonia), FN 1, TN 5
    assert covid.support == 4
    assert covid.precision == pytest.approx(3 / 4)
    assert covid.recall == pytest.approx(3 / 4)
    assert covid.specificity == pytest.approx(5 / 6)
    assert covid.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    normal = m.scores("normal")
    # normal: TP 2, FP 1 (a covid), FN 1, TN 6
    assert (normal.precision, normal.recall, normal.specificity) == pytest.approx(
        (2 / 3, 2 / 3, 6 / 7)
    )
    assert m.accuracy == pytest.approx(7 / 10)


def test_macro_is_plain_mean_and_weighted_uses_support() -> None:
    m = classification_metrics(TRUE, onehot_probabilities(PRED), CLASSES, n_bootstrap=0)
    recalls = [3 / 4, 2 / 3, 2 / 3]
    assert m.macro.recall == pytest.approx(np.mean(recalls))
    assert m.weighted.recall == pytest.approx(np.average(recalls, weights=[4, 3, 3]))
    # Weighted recall is accuracy, by definition.
    assert m.weighted.recall == pytest.approx(m.accuracy)


def test_scores_agree_with_scikit_learn() -> None:
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet([1, 1, 1], 200)
    probs[np.arange(200), y] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    m = classification_metrics([CLASSES[i] for i in y], probs, CLASSES, n_bootstrap=0)
    pred = probs.argmax(axis=1)
    for average in ("macro", "weighted"):
        ours = getattr(m, average)
        assert ours.precision == pytest.approx(precision_score(y, pred, average=average))
        assert ours.recall == pytest.approx(recall_score(y, pred, average=average))
        assert ours.f1 == pytest.approx(f1_score(y, pred, average=average))
        assert ours.auc == pytest.approx(
            roc_auc_score(y, probs, multi_class="ovr", average=average)
        )


def test_precision_of_a_class_never_predicted_is_undefined_not_zero() -> None:
    probs = onehot_probabilities([0, 0, 0, 0])
    m = classification_metrics(
        ["covid-19", "covid-19", "normal", "pneumonia"], probs, CLASSES, n_bootstrap=0
    )
    assert math.isnan(m.scores("normal").precision)
    assert m.scores("normal").recall == 0.0
    assert m.scores("normal").f1 == 0.0
    assert m.to_dict()["per_class"][1]["precision"] is None


def test_class_absent_from_truth_has_undefined_recall_and_auc_and_no_roc_curve() -> None:
    probs = onehot_probabilities([0, 1, 0])
    m = classification_metrics(["covid-19", "normal", "covid-19"], probs, CLASSES, n_bootstrap=0)
    pneumonia = m.scores("pneumonia")
    assert pneumonia.support == 0
    assert math.isnan(pneumonia.recall)
    assert math.isnan(pneumonia.auc)
    assert [c.label for c in m.roc_curves] == ["covid-19", "normal"]
    assert m.macro.recall == 1.0  # averaged over the classes where recall is defined


def test_roc_auc_is_one_for_perfect_ranking_and_half_for_constant_scores() -> None:
    perfect = classification_metrics(
        TRUE, onehot_probabilities([CLASSES.index(t) for t in TRUE]), CLASSES, n_bootstrap=0
    )
    assert all(c.auc == 1.0 for c in perfect.roc_curves)
    flat = classification_metrics(TRUE, np.full((10, 3), 1 / 3), CLASSES, n_bootstrap=0)
    assert all(c.auc == pytest.approx(0.5) for c in flat.roc_curves)
    curve = perfect.roc_curves[0]
    assert curve.false_positive_rate[0] == 0.0
    assert curve.true_positive_rate[-1] == 1.0


def test_expected_calibration_error_by_hand() -> None:
    # Two images at confidence 0.9 (one right) and two at 0.6 (both right), 10 bins:
    # bin (0.8, 0.9]: |0.5 - 0.9| * 2/4 = 0.2; bin (0.5, 0.6]: |1.0 - 0.6| * 2/4 = 0.2.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    m = classification_metrics(["a", "b", "a", "a"], probs, ["a", "b"], n_bootstrap=0)
    assert m.calibration.expected_calibration_error == pytest.approx(0.4)
    assert m.calibration.maximum_calibration_error == pytest.approx(0.4)
    counts = [b.count for b in m.calibration.bins]
    assert counts == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    full = m.calibration.bins[8]
    assert (full.lower, full.upper, full.accuracy) == pytest.approx((0.8, 0.9, 0.5))


def test_perfectly_confident_correct_classifier_is_perfectly_calibrated() -> None:
    probs = np.eye(3)[[0, 1, 2, 0]]
    m = classification_metrics(
        ["covid-19", "normal", "pneumonia", "covid-19"], probs, CLASSES, n_bootstrap=0
    )
    assert m.calibration.expected_calibration_error == 0.0
    assert m.calibration.brier_score == 0.0


def test_bootstrap_intervals_bracket_the_estimate_and_are_reproducible() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    probs = rng.dirichlet([1, 1, 1], 120)
    probs[np.arange(120), y] += 0.4
    probs /= probs.sum(axis=1, keepdims=True)
    labels = [CLASSES[i] for i in y]
    first = classification_metrics(labels, probs, CLASSES, n_bootstrap=300, seed=7)
    again = classification_metrics(labels, probs, CLASSES, n_bootstrap=300, seed=7)
    other = classification_metrics(labels, probs, CLASSES, n_bootstrap=300, seed=8)
    assert first.intervals == again.intervals
    assert first.intervals != other.intervals
    for name in ("accuracy", "macro_f1", "macro_auc", "recall[covid-19]", "specificity[normal]"):
        ci = first.intervals[name]
        assert ci.low <= ci.estimate <= ci.high
        assert ci.high - ci.low > 0.0
        assert ci.level == 0.95


def test_wider_confidence_level_gives_wider_interval() -> None:
    labels = TRUE * 5
    probs = onehot_probabilities(PRED * 5)
    narrow = classification_metrics(labels, probs, CLASSES, n_bootstrap=400, confidence_level=0.5)
    wide = classification_metrics(labels, probs, CLASSES, n_bootstrap=400, confidence_level=0.99)
    n, w = narrow.intervals["accuracy"], wide.intervals["accuracy"]
    assert w.high - w.low > n.high - n.low


def test_report_is_strict_json() -> None:
    import json

    m = classification_metrics(
        ["covid-19", "normal"], onehot_probabilities([0, 0]), CLASSES, n_bootstrap=20
    )
    json.dumps(m.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        (["covid-19"], np.array([[0.5, 0.5]]), "shape"),
        (["covid-19", "normal"], np.full((1, 3), 1 / 3), "rows"),
        (["covid-19"], np.array([[0.9, 0.9, 0.1]]), "sum to 1"),
        (["covid-19"], np.array([[np.nan, 0.5, 0.5]]), "finite"),
        (["influenza"], np.full((1, 3), 1 / 3), "influenza"),
        ([], np.zeros((0, 3)), "no images"),
    ],
)
def test_bad_input_raises_configuration_error_saying_what(
    labels: list[str], probs: NDArray[np.float64], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        classification_metrics(labels, probs, CLASSES, n_bootstrap=0)


@st.composite
def predictions(draw: st.DrawFn) -> tuple[list[str], NDArray[np.float64]]:
    n = draw(st.integers(1, 30))
    truth = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    weights = draw(
        st.lists(st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3), min_size=n, max_size=n)
    )
    probs = np.array(weights)
    probs /= probs.sum(axis=1, keepdims=True)
    return [CLASSES[i] for i in truth], probs


@settings(max_examples=60, deadline=None)
@given(predictions())
def test_every_figure_is_bounded(data: tuple[list[str], NDArray[np.float64]]) -> None:
    labels, probs = data
    m = classification_metrics(labels, probs, CLASSES, n_bootstrap=20)
    values = [m.accuracy, m.calibration.expected_calibration_error]
    for s in m.per_class:
        values += [s.precision, s.recall, s.specificity, s.f1, s.auc]
    for avg in (m.macro, m.weighted):
        values += [avg.precision, avg.recall, avg.specificity, avg.f1, avg.auc]
    for ci in m.intervals.values():
        values += [ci.low, ci.high]
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 + 1e-12 for v in values)
    assert 0.0 <= m.calibration.brier_score <= 2.0
    assert sum(map(sum, m.confusion_matrix)) == len(labels)
    assert sum(b.count for b in m.calibration.bins) == len(labels)


@settings(max_examples=40, deadline=None)
@given(predictions(), st.randoms(use_true_random=False))
def test_figures_do_not_depend_on_image_order(
    data: tuple[list[str], NDArray[np.float64]], random: object
) -> None:
    labels, probs = data
    order = list(range(len(labels)))
    random.shuffle(order)  # type: ignore[attr-defined]
    a = classification_metrics(labels, probs, CLASSES, n_bootstrap=0)
    b = classification_metrics([labels[i] for i in order], probs[order], CLASSES, n_bootstrap=0)
    assert a.confusion_matrix == b.confusion_matrix
    for x, y in zip(a.per_class, b.per_class, strict=True):
        assert x.to_dict() == pytest.approx(y.to_dict(), nan_ok=True)
    assert a.calibration.expected_calibration_error == pytest.approx(
        b.calibration.expected_calibration_error
    )


def test_vectorised_bootstrap_scores_agree_with_scikit_learn_point_estimates() -> None:
    # The intervals' resamples are scored by hand-written array code (all resamples at
    # once); on the unresampled data it must give the scikit-learn figures reported.
    from covidcxr.evaluate._bootstrap import _headline

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 150)
    probs = rng.integers(1, 5, (150, 3)).astype(np.float64)  # many ties, for the AUC
    probs /= probs.sum(axis=1, keepdims=True)
    m = classification_metrics([CLASSES[i] for i in y], probs, CLASSES, n_bootstrap=10)
    predicted = np.bincount(probs.argmax(axis=1), minlength=len(CLASSES)) > 0
    vectorised = _headline(y, probs.argmax(axis=1), probs, CLASSES, predicted)
    bootstrapped = {name for name, ci in m.intervals.items() if ci.method == "bootstrap"}
    assert set(vectorised) == bootstrapped
    for name, value in vectorised.items():
        assert float(value) == pytest.approx(m.intervals[name].estimate), name
    assert m.intervals["macro_auc"].estimate == m.macro.auc
    assert m.intervals["auc[normal]"].estimate == m.scores("normal").auc


def test_macro_precision_interval_averages_the_same_classes_in_every_resample() -> None:
    # covid-19 and normal are 90 % right; pneumonia is predicted twice, both wrongly, so
    # its precision is 0 and about one resample in eight never predicts it. Such a
    # resample once averaged two classes instead of three: its macro precision near 0.6
    # put the upper bound at 0.61 for a figure of 0.40 whose other resamples stayed below
    # 0.43.
    truth, rows = [], []
    for c in range(3):
        for i in range(100):
            row = np.full(3, 0.1)
            if c < 2:
                row[c if i < 90 else 1 - c] = 0.8
            else:
                row[0 if i < 50 else 1] = 0.8
            truth.append(CLASSES[c])
            rows.append(row)
    probs = np.array(rows)
    probs[0] = probs[100] = [0.1, 0.1, 0.8]
    m = classification_metrics(truth, probs, CLASSES, n_bootstrap=2000, seed=0)
    precision = m.intervals["macro_precision"]
    assert precision.estimate == pytest.approx((0.597 + 0.597 + 0.0) / 3, abs=1e-3)
    assert precision.low < precision.estimate < precision.high < 0.45
    # Every class was predicted somewhere: the point figure and the resamples agree on
    # which classes to average, here all three.
    assert [s.precision for s in m.per_class][2] == 0.0


# Wilson score interval at 95 %, z = 1.959964: for k of n successes the bounds are
# (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n); at k = n the lower bound is
# n / (n + z²) (Wilson 1927; Newcombe 1998, method 3). Written out here so the test does
# not merely repeat the library call the code makes.
def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def test_proportions_at_100_percent_get_a_wilson_interval_not_a_zero_width_one() -> None:
    # 60 of 60 correct: the old bootstrap said "100.0 % (100.0 % to 100.0 %)".
    truth = [0] * 20 + [1] * 20 + [2] * 20
    m = classification_metrics(
        [CLASSES[i] for i in truth], onehot_probabilities(truth), CLASSES, n_bootstrap=200
    )
    accuracy = m.intervals["accuracy"]
    assert accuracy.method == "wilson"
    assert (accuracy.estimate, accuracy.high) == (1.0, 1.0)
    assert accuracy.low == pytest.approx(60 / (60 + 1.959963984540054**2))
    assert accuracy.low == pytest.approx(0.939828, abs=1e-6)
    recall = m.intervals["recall[normal]"]
    assert recall.low == pytest.approx(wilson(20, 20)[0])  # denominator: 20 normal images
    specificity = m.intervals["specificity[normal]"]
    assert specificity.low == pytest.approx(wilson(40, 40)[0])  # the 40 other images
    assert not accuracy.degenerate


def test_proportion_intervals_use_each_figures_own_denominator() -> None:
    # Worked example: covid-19 has 4 images, 3 found; predicted covid-19 4 times, 3 right;
    # 6 other images, of which 5 were not called covid-19 (1 false positive).
    m = classification_metrics(TRUE, onehot_probabilities(PRED), CLASSES, n_bootstrap=0)
    for name, (k, n) in {
        "accuracy": (7, 10),
        "recall[covid-19]": (3, 4),
        "precision[covid-19]": (3, 4),
        "specificity[covid-19]": (5, 6),
        "precision[pneumonia]": (2, 3),
    }.items():
        ci = m.intervals[name]
        assert ci.method == "wilson", name
        assert ci.estimate == pytest.approx(k / n), name
        assert (ci.low, ci.high) == pytest.approx(wilson(k, n)), name


def test_a_proportion_with_no_images_has_no_interval() -> None:
    m = classification_metrics(
        ["covid-19", "normal"], onehot_probabilities([0, 1]), CLASSES, n_bootstrap=0
    )
    ci = m.intervals["recall[pneumonia]"]  # no pneumonia image: recall undefined
    assert [math.isnan(v) for v in (ci.estimate, ci.low, ci.high)] == [True] * 3
    assert not ci.degenerate


def test_a_bootstrap_whose_resamples_do_not_vary_has_no_interval() -> None:
    truth = [0] * 20 + [1] * 20 + [2] * 20
    m = classification_metrics(
        [CLASSES[i] for i in truth], onehot_probabilities(truth), CLASSES, n_bootstrap=200
    )
    for name in ("macro_f1", "macro_auc", "f1[covid-19]", "auc[pneumonia]"):
        ci = m.intervals[name]
        assert ci.method == "bootstrap", name
        assert ci.estimate == 1.0, name
        assert [math.isnan(ci.low), math.isnan(ci.high)] == [True, True], name  # not 1.0, 1.0
        assert ci.degenerate, name


# The bootstrap bounds of one fixed case, as the unchunked bootstrap (all 1,000 resamples
# scored at once) computed them: chunking must not change a single bit.
_BOUNDS_SEED_11 = {
    "macro_precision": (0.496456319044435, 0.6231695121200934),
    "macro_recall": (0.49683298989304286, 0.6176736249401144),
    "macro_f1": (0.49133406461939844, 0.6159195524186646),
    "macro_auc": (0.7699009710881232, 0.8388500006076126),
    "f1[covid-19]": (0.38616710875331567, 0.5772095091776502),
    "auc[covid-19]": (0.7480873440285205, 0.8544046345811052),
    "f1[normal]": (0.5127586206896552, 0.6842564259485924),
    "auc[normal]": (0.7890239840106595, 0.8848267821452365),
    "f1[pneumonia]": (0.49142857142857144, 0.6458333333333334),
    "auc[pneumonia]": (0.7120497731140103, 0.8263063669880885),
}


def _bootstrap_case(
    n: int, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet([1, 1, 1], n)
    probs[np.arange(n), y] += 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs.argmax(axis=1), probs


@pytest.mark.parametrize("chunk_elements", [None, 997])
def test_chunked_bootstrap_gives_the_bounds_of_scoring_every_resample_at_once(
    chunk_elements: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidcxr.evaluate import _bootstrap

    if chunk_elements is not None:  # 3 resamples a chunk: many chunk boundaries
        monkeypatch.setattr(_bootstrap, "_CHUNK_ELEMENTS", chunk_elements)
    y, pred, probs = _bootstrap_case(250, seed=3)
    bounds = _bootstrap._bootstrap_bounds(
        y, pred, probs, CLASSES, n_bootstrap=1000, confidence_level=0.95, seed=11
    )
    assert bounds == _BOUNDS_SEED_11


def test_bootstrap_memory_does_not_grow_with_the_resamples() -> None:
    import tracemalloc

    from covidcxr.evaluate._bootstrap import _bootstrap_bounds

    y, pred, probs = _bootstrap_case(2000, seed=0)
    peaks = []
    for n_bootstrap in (100, 1000):
        tracemalloc.start()
        try:
            _bootstrap_bounds(
                y, pred, probs, CLASSES, n_bootstrap=n_bootstrap, confidence_level=0.95, seed=0
            )
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # Scoring all 1,000 resamples of 2,000 images at once peaked at 180 MB; in chunks
    # the peak is some 25 MB, and ten times the resamples cost almost nothing more.
    assert peaks[1] < 48 * 2**20
    assert peaks[1] < 1.5 * peaks[0]
