"""The shipped default artifact and the embedding cache (real MiniLM on a handful of texts)."""
import numpy as np

from router.artifact import load_default
from router.base import TIERS, Knobs
from router.embeddings import DIM, embed, embedding_text


def test_default_artifact_loads_and_routes(tmp_path):
    router = load_default()
    assert router.version and router.meta["dataset"] == "routerbench_subset"
    assert set(router.tiers.values()) == set(TIERS)
    assert router.tiers["gpt-4-1106-preview"] == "large" and router.tiers["mistralai/mistral-7b-chat"] == "small"
    texts = ["Write a python function to check whether a number is prime.",
             "Which gas do plants absorb?\nA) oxygen\nB) carbon dioxide\nC) helium\nD) neon\nAnswer:"]
    emb = embed(texts, cache_dir=tmp_path)
    best = router.route(texts, emb, [Knobs(alpha=1.0)] * 2)
    cheap = router.route(texts, emb, [Knobs(alpha=0.0)] * 2)
    assert all(c.predicted_cost_usd <= b.predicted_cost_usd for c, b in zip(cheap, best))
    assert all(c.tier in TIERS and 0 <= c.predicted_quality <= 1 for c in best + cheap)
    assert all(c.cluster >= 0 for c in best)


def test_embeddings_are_normalised_and_cached(tmp_path):
    texts = ["hello world", "hello world", "a different sentence"]
    e1 = embed(texts, cache_dir=tmp_path)
    assert e1.shape == (3, DIM) and e1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e1[0], e1[1])
    assert list(tmp_path.glob("shard-*.npz"))

    class NoEncoder:
        def encode(self, *a, **k):
            raise AssertionError("cache miss: encoder called")

    e2 = embed(texts, encoder=NoEncoder(), cache_dir=tmp_path)
    np.testing.assert_allclose(e1, e2)


def test_long_prompts_keep_their_tail():
    text = "EXEMPLAR " * 500 + "the actual question?"
    assert embedding_text(text).endswith("the actual question?") and len(embedding_text(text)) < 1100
