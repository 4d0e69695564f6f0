"""Zero-shot and retrieval metrics against hand-computed cases (docs/EVALUATION.md: perfect, constant, permutation)
and against CLIP_benchmark's definitions, re-implemented here in their own form, on inputs full of ties.

Tie rule under test: CLIP_benchmark's — equal scores are credited as ``torch.topk`` orders them.
"""

import hashlib
from math import comb

import pytest
import torch

from mtv.eval.retrieval import match_matrix, retrieval_chance, retrieval_recall
from mtv.eval.benchmarks.imagenet import class_names
from mtv.eval.zeroshot import (class_embeddings, class_prompts, mean_per_class_recall, openai_imagenet_templates,
                               template_set, topk_accuracy, undefined_ks, zeroshot_accuracy, zeroshot_chance)

ONE_EACH = [[i] for i in range(12)]


def test_perfect_predictor_recalls_everything():
    r = retrieval_recall(torch.eye(12), ONE_EACH)
    assert r == {f"{d}_r{k}": 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    z = zeroshot_accuracy(torch.eye(8), torch.eye(8), torch.arange(8))
    assert z == {"top1": 1.0, "top5": 1.0, "mean_per_class_recall": 1.0}


def clip_benchmark_accuracy(logits, target, topk):
    """CLIP_benchmark's zero-shot top-k: one sorted topk of max(topk) classes per row, transposed to (k, N); a
    row counts at k if its target equals any of the first k predictions."""
    pred = torch.topk(logits, max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def balanced_accuracy(target, pred):
    """scikit-learn's balanced_accuracy_score: per true class, the share predicted right; mean over those classes."""
    classes = sorted(set(target.tolist()))
    return sum(((pred == c) & (target == c)).sum().item() / (target == c).sum().item() for c in classes) / len(classes)


def clip_benchmark_retrieval(text_emb, image_emb, text_image, k):
    """CLIP_benchmark's zero-shot retrieval at k: scores are texts x images; per query the one-hot of its
    topk(k) candidates times the positive-pair matrix counts true positives; a query hits if any."""
    scores = text_emb @ image_emb.t()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), text_image] = True

    def hits(s, pos):
        onehot = torch.nn.functional.one_hot(torch.topk(s, k, dim=1)[1], num_classes=s.shape[1])
        true_pos = (onehot * pos.view(len(s), 1, -1)).sum(dim=(1, 2))
        return ((true_pos / pos.sum(dim=1)) > 0).float().mean().item()

    return {"t2i": hits(scores, positive), "i2t": hits(scores.T, positive.T)}


def tied_scores(n, c, seed):
    """Scores with three values only, so most rows tie at their top."""
    return torch.randint(0, 3, (n, c), generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("classes", [16, 40, 1000])
def test_zeroshot_topk_and_mean_per_class_recall_equal_clip_benchmark_on_ties(classes):
    scores = tied_scores(300, classes, classes)
    labels = torch.randint(0, classes, (300,), generator=torch.Generator().manual_seed(1))
    labels[:100] = scores[:100].argmax(1)  # many rows whose true class is among the tied maxima
    top1, top5 = clip_benchmark_accuracy(scores, labels, (1, 5))
    assert topk_accuracy(scores, labels) == {"top1": top1, "top5": top5}
    assert mean_per_class_recall(scores, labels) == pytest.approx(balanced_accuracy(labels, scores.argmax(1)))
    # the inputs exercise the rule: a tie-breaking that counts ties against the true class scores lower
    no_credit = ((scores >= scores.gather(1, labels[:, None])).sum(1) <= 1).double().mean().item()
    assert no_credit < top1


def test_top5_is_not_defined_below_five_classes():
    scores = tied_scores(50, 3, 0)
    labels = torch.arange(50) % 3
    (top1,) = clip_benchmark_accuracy(scores, labels, (1,))
    assert topk_accuracy(scores, labels) == {"top1": top1}
    assert set(zeroshot_accuracy(torch.eye(3), torch.eye(3), torch.arange(3))) == {"top1", "mean_per_class_recall"}
    assert undefined_ks(3) == {"top5": "not defined with 3 classes (fewer than 5)"} and undefined_ks(5) == {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_equals_clip_benchmark_with_repeated_captions_and_ties(seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 2, (30, 4), generator=g).float()
    captions = torch.randint(0, 2, (12, 4), generator=g).float()  # 12 distinct-or-not strings ...
    owner = torch.arange(60) % 30  # ... spread as 2 captions per image: many texts are the same string
    texts = captions[torch.randint(0, 12, (60,), generator=g)]
    ours = retrieval_recall(images @ texts.T, [owner.eq(i).nonzero()[:, 0].tolist() for i in range(30)],
                            ks=(1, 5, 10))
    for k in (1, 5, 10):
        ref = clip_benchmark_retrieval(texts, images, owner, k)
        assert ours[f"i2t_r{k}"] == pytest.approx(ref["i2t"]) and ours[f"t2i_r{k}"] == pytest.approx(ref["t2i"])


def test_retrieval_caps_k_at_the_number_of_candidates():
    r = retrieval_recall(torch.ones(5, 5), ONE_EACH[:5])
    assert (r["i2t_r5"], r["i2t_r10"], r["t2i_r5"], r["t2i_r10"]) == (1.0, 1.0, 1.0, 1.0)


def test_mean_per_class_recall_takes_the_first_of_tied_maxima():
    scores = torch.tensor([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]])  # argmax is class 0 in both rows
    assert mean_per_class_recall(scores, torch.tensor([1, 0])) == 0.5


def test_shipped_imagenet_names_and_templates_are_openais():
    """SHA-256 of the newline-joined lists in OpenAI's notebooks/Prompt_Engineering_for_ImageNet.ipynb
    (``imagenet_classes``, ``imagenet_templates``; CLIP_benchmark's en_classnames.json "imagenet1k" and
    en_zeroshot_classification_templates.json "imagenet1k" are the same lists)."""
    names = class_names()
    templates = openai_imagenet_templates()
    assert hashlib.sha256("\n".join(names).encode()).hexdigest() == \
        "571ae1c583b4be7da87519494c52bf405a46af05d5815627c7a0dee997068b60"
    assert hashlib.sha256("\n".join(templates).encode()).hexdigest() == \
        "4f976686fb651bb5803d4689dcd849f75efe0ef19a3c801355bc9a6f03c8a5af"
    assert len(names) == 1000 and names[836] == names[837] == "sunglasses" and names[657] == names[744] == "missile"
    assert len(templates) == 80 and all(t.count("{}") == 1 for t in templates)
    assert template_set({}) == (templates, "openai-imagenet-80")
    assert template_set({"templates": ["a {}."]}) == (["a {}."], "dataset.json")


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
                        [0.5, 0.5, 0.0, 0.6, 0.6]])  # image 1: its two captions tie for first, either hits
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
    assert zeroshot_chance(4) == {"top1": 0.25, "mean_per_class_recall": 0.25}


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
