"""The near-duplicate base: twin questions whose right answer flips, answered by a model that
always picks the same letter (the structure of Winogrande's twin sentences)."""
import numpy as np
import pytest

from router.features import FEATURE_NAMES, choice_order, text_features
from router.quality import ESTIMATORS, KnnQuality, NearDuplicateQuality

ORDER = FEATURE_NAMES.index("choice_order")


def test_choice_order_reads_the_last_question_only():
    few_shot = "Q: x\nA) zebra\nB) apple\nAnswer: B\n\n"
    assert choice_order(few_shot + "Q: y\nA) apple\nB) zebra\nAnswer:") == 1.0
    assert choice_order("Q: y\nA) Tablet\nB) Phone\nAnswer:") == -1.0
    assert choice_order("Write a function to reverse a list.") == 0.0
    assert text_features(["Q\nA) b\nB) a\nAnswer:"])[0, ORDER] == -1.0


def twin_problem(n_pairs=150, singles=100, dim=32, seed=0):
    """Pairs of near-identical queries with opposite gold letters (or the same letter when the
    second lists the options swapped). Model 0 always answers "A"; model 1 is right 70 % of the
    time at random; model 2 is right on both twins or neither."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_pairs + singles, dim))
    emb, feats, gold, pair = [], [], [], []
    for i in range(n_pairs):
        swapped = bool(i % 3 == 0)
        g = int(rng.integers(0, 2))
        for twin in range(2):
            emb.append(base[i] + 0.01 * rng.normal(size=dim))
            order = 1.0 if (twin == 0 or not swapped) else -1.0
            feats.append(order)
            gold.append(g if twin == 0 else (g if swapped else 1 - g))
            pair.append(i)
    for i in range(n_pairs, n_pairs + singles):
        emb.append(base[i])
        feats.append(1.0)
        gold.append(int(rng.integers(0, 2)))
        pair.append(i)
    emb = np.array(emb)
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    f = np.zeros((len(emb), len(FEATURE_NAMES)), dtype=np.float32)
    f[:, ORDER] = feats
    gold, pair = np.array(gold), np.array(pair)
    hard = rng.random(n_pairs + singles) < 0.3
    scores = np.stack([
        (gold == 0).astype(float),
        (rng.random(len(gold)) < 0.7).astype(float),
        (~hard[pair]).astype(float),
    ], axis=1)
    return emb, f, scores, pair


@pytest.fixture(scope="module")
def fitted():
    emb, feats, scores, pair = twin_problem()
    n_pairs = 150
    # hold out one twin of the last 50 pairs and 20 queries with no twin at all
    test = np.r_[np.arange(200, 300, 2), np.arange(2 * n_pairs + 80, 2 * n_pairs + 100)]
    train = np.setdiff1d(np.arange(len(emb)), test)
    model = NearDuplicateQuality().fit(emb[train], feats[train], scores[train], scores[train])
    return model, emb, feats, scores, train, test


def test_twin_outcomes_are_predicted_where_neighbours_average_them_away(fitted):
    model, emb, feats, scores, train, test = fitted
    twins = test[:50]
    pred = model.predict(emb[twins], feats[twins]).quality
    right = (pred[:, 0] > 0.5) == scores[twins, 0]
    assert right.mean() >= 0.95  # the letter-fixed model, through flips and swaps
    assert ((pred[:, 2] > 0.5) == scores[twins, 2]).mean() >= 0.9  # shared difficulty
    knn = KnnQuality(k=10).fit(emb[train], feats[train], scores[train], scores[train])
    knn_right = (knn.predict(emb[twins], feats[twins]).quality[:, 0] > 0.5) == scores[twins, 0]
    assert knn_right.mean() < 0.8


def test_queries_without_a_near_copy_get_no_opinion(fitted):
    model, emb, feats, _, _, test = fitted
    alone = test[50:]
    assert np.allclose(model.predict(emb[alone], feats[alone]).quality, 0.5)


def test_silent_when_training_has_too_few_near_copies():
    emb, feats, scores, _ = twin_problem(n_pairs=5, singles=100)
    model = NearDuplicateQuality(min_pairs=30).fit(emb, feats, scores, scores)
    assert model.coef is None
    assert np.allclose(model.predict(emb[:4], feats[:4]).quality, 0.5)


def test_state_round_trip(fitted):
    model, emb, feats, _, _, test = fitted
    params, arrays = model.state()
    again = ESTIMATORS[model.kind].from_state(params, arrays)
    assert np.allclose(again.predict(emb[test], feats[test]).quality, model.predict(emb[test], feats[test]).quality,
                       atol=1e-3)
