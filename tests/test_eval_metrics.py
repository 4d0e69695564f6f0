"""Zero-shot and retrieval metrics against hand-computed cases (docs/EVALUATION.md: perfect, constant, permutation).

Tie rule under test: equal scores count against the true match (a wrong candidate scoring the same is ahead of it).
"""

from math import comb

import pytest
import torch

from mtv.eval.retrieval import match_matrix, retrieval_chance, retrieval_recall
from mtv.eval.zeroshot import (class_embeddings, class_prompts, mean_per_class_recall, topk_accuracy,
                               zeroshot_accuracy, zeroshot_chance)

ONE_EACH = [[i] for i in range(12)]


def test_perfect_predictor_recalls_everything():
    r = retrieval_recall(torch.eye(12), ONE_EACH)
    assert r == {f"{d}_r{k}": 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    z = zeroshot_accuracy(torch.eye(8), torch.eye(8), torch.arange(8))
    assert z == {"top1": 1.0, "top5": 1.0, "mean_per_class_recall": 1.0}


def test_constant_predictor_gets_no_credit_for_ties():
    # 12 candidates all tied: 11 wrong ones are ahead of the right one, so only k >= 12 would hit.
    assert set(retrieval_recall(torch.zeros(12, 12), ONE_EACH).values()) == {0.0}
    # 5 candidates: 4 wrong ones ahead, which is fewer than k = 5 and 10.
    r = retrieval_recall(torch.ones(5, 5), ONE_EACH[:5])
    assert (r["i2t_r1"], r["i2t_r5"], r["i2t_r10"], r["t2i_r1"], r["t2i_r5"]) == (0.0, 1.0, 1.0, 0.0, 1.0)
    assert zeroshot_accuracy(torch.ones(6, 4), torch.ones(8, 4), torch.arange(6)) == \
        {"top1": 0.0, "top5": 0.0, "mean_per_class_recall": 0.0}
    assert topk_accuracy(torch.zeros(3, 3), torch.arange(3), ks=(1, 5)) == {"top1": 0.0, "top5": 1.0}


def test_a_single_tie_with_a_wrong_candidate_costs_one_rank():
    scores = torch.tensor([[0.5, 0.5, 0.1]])  # true class 1 tied with class 0
    assert topk_accuracy(scores, torch.tensor([1]), ks=(1, 2)) == {"top1": 0.0, "top2": 1.0}


def test_known_permutation():
    # Image i ranks texts i, i+1, ... (cyclically) with distinct scores; its caption sits at text perm[i],
    # so its rank is (perm[i] - i) % 6 = 0, 1, 5, 2, 5, 5, and text perm[i] ranks image i the same.
    n, perm = 6, [0, 2, 1, 5, 3, 4]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    sim = -((j - i) % n).float()
    r = retrieval_recall(sim, [[p] for p in perm], ks=(1, 2, 3, 5, 6))
    expected = {1: 1 / 6, 2: 2 / 6, 3: 3 / 6, 5: 3 / 6, 6: 1.0}
    for k, v in expected.items():
        assert r[f"i2t_r{k}"] == pytest.approx(v)
        assert r[f"t2i_r{k}"] == pytest.approx(v)


def test_multiple_captions_hit_if_any_is_in_top_k():
    # Image 0 owns texts 0, 1, 2; image 1 owns texts 3, 4.
    sim = torch.tensor([[0.1, 0.7, 0.2, 0.9, 0.8],   # image 0: texts 3, 4 (wrong) come before text 1
                        [0.5, 0.5, 0.0, 0.6, 0.6]])  # image 1: its two captions tie for first
    owners = [[0, 1, 2], [3, 4]]
    r = retrieval_recall(sim, owners, ks=(1, 2, 3))
    assert (r["i2t_r1"], r["i2t_r2"], r["i2t_r3"]) == (0.5, 0.5, 1.0)
    # Texts as queries (columns): text 0 -> image 1 first (miss@1); 1 -> image 0 (hit); 2 -> image 0 (hit);
    # 3 -> image 0 first (miss@1); 4 -> image 0 first (miss@1). Every text hits at 2 of 2 images.
    assert (r["t2i_r1"], r["t2i_r2"]) == (pytest.approx(2 / 5), 1.0)


def test_true_class_ranked_third():
    scores = torch.zeros(1, 10)
    scores[0, :3] = torch.tensor([0.9, 0.8, 0.7])
    assert topk_accuracy(scores, torch.tensor([2]), ks=(1, 2, 3, 5)) == \
        {"top1": 0.0, "top2": 0.0, "top3": 1.0, "top5": 1.0}


def test_mean_per_class_recall_on_unbalanced_classes():
    # class 0: 4 samples, 3 right; class 1: 1 sample, wrong; class 2: 2 samples, both right; class 3 absent.
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 2, 0, 2, 2])
    scores = torch.nn.functional.one_hot(predicted, 4).float()
    assert topk_accuracy(scores, labels, ks=(1,))["top1"] == pytest.approx(5 / 7)
    assert mean_per_class_recall(scores, labels) == pytest.approx((3 / 4 + 0 + 1) / 3)


def test_class_embedding_is_the_normalised_mean_of_normalised_prompts():
    prompts = torch.tensor([[2.0, 0.0], [0.0, 3.0],    # class 0: two templates, different norms
                            [0.0, -1.0], [0.0, -5.0]])  # class 1
    emb = class_embeddings(prompts, 2)
    torch.testing.assert_close(emb, torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5], [0.0, -1.0]]))
    assert class_prompts(["red cube", "blue disc"], ["a photo of a {}.", "{} here"]) == \
        ["a photo of a red cube.", "red cube here", "a photo of a blue disc.", "blue disc here"]


def test_chance_levels():
    r = retrieval_chance(ONE_EACH[:10], 10)
    assert r == pytest.approx({f"{d}_r{k}": min(k, 10) / 10 for d in ("i2t", "t2i") for k in (1, 5, 10)})
    # 2 images x 3 captions: an image query hits at 1 with 3/6; at 2 unless both picks are wrong.
    r = retrieval_chance([[0, 1, 2], [3, 4, 5]], 6, ks=(1, 2))
    assert r["i2t_r1"] == pytest.approx(0.5)
    assert r["i2t_r2"] == pytest.approx(1 - comb(3, 2) / comb(6, 2))
    assert r["t2i_r1"] == pytest.approx(0.5) and r["t2i_r2"] == 1.0
    assert zeroshot_chance(4) == {"top1": 0.25, "top5": 1.0, "mean_per_class_recall": 0.25}


def test_every_query_needs_a_match():
    with pytest.raises(ValueError):
        match_matrix([[0], []], 2)
    with pytest.raises(ValueError):
        match_matrix([[0], [0]], 2)


def test_effective_rank_counts_the_directions_used():
    from mtv.eval.metrics import effective_rank

    rng = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=rng))[0]
    # 3 orthogonal directions with equal spread (±1 along each): rank 3; an added constant changes nothing
    rows = torch.cat([basis[:3], -basis[:3]]) + 5.0
    assert effective_rank(rows) == pytest.approx(3.0, rel=1e-6)
    assert effective_rank(torch.ones(10, 4)) == 0.0  # every row the same: no direction is used
