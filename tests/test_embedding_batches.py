"""Token-budgeted sub-batches of the encoder: less padding, the same vectors."""
import numpy as np

from router.embeddings import embed, load_encoder, token_batches, token_counts


def test_token_batches_cover_every_text_once_sorted_and_within_budget():
    tokens = np.array([5, 250, 12, 7, 256, 30, 30, 9, 100, 3])
    batches = token_batches(tokens, max_size=4, budget=64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(tokens)))  # every text, once
    assert (np.diff(tokens[flat]) >= 0).all()  # shortest first
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * tokens[b].max() <= 64  # a lone long text still gets a batch
    assert [len(b) for b in batches] == [4, 2, 1, 1, 1, 1]


def test_budgeted_batches_give_the_vectors_of_one_padded_batch():
    texts = ["Hi.", "What is 2 + 2?", "Summarise: " + "the quick brown fox jumps over the lazy dog. " * 30,
             "Name a prime.", "def f(x):\n    return x * 2\n# explain this code", "Translate 'cat' to French."]
    encoder = load_encoder()
    budgeted = embed(texts, encoder=encoder, use_cache=False, token_budget=64)
    whole = embed(texts, encoder=encoder, use_cache=False, token_budget=10**9)
    assert len(token_batches(token_counts(encoder, texts), 64, 64)) > 1  # it did split them
    assert np.abs(budgeted - whole).max() < 1e-5
