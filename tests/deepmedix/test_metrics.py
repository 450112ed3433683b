"""Report metrics: METEOR against nltk (stub WordNet), ROUGE-L / BLEU oracles, the keyword
CheXpert labeller, and the ranking of true OPEN-I reports above their corrupted copies."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from nltk.stem.porter import PorterStemmer
from nltk.translate.bleu_score import corpus_bleu
from nltk.translate.meteor_score import meteor_score

from clinfuse.core.errors import DataError
from clinfuse.methods.deepmedix.metrics import (
    _FINDING_RE,
    CHEXPERT_14,
    chexpert_labels,
    label_f1,
    meteor,
    report_metrics,
    report_score,
    rouge_l,
    tokenize,
)
from clinfuse.methods.deepmedix.openi import corrupt_report, load_openi_reports


class _NoWordNet:
    """nltk's meteor_score with this WordNet does no synonym matching."""

    def synsets(self, word):
        return []


class _Identity:
    def stem(self, word):
        return word


@pytest.fixture(scope="module")
def findings():
    try:
        frame = load_openi_reports()
    except DataError as exc:
        pytest.skip(str(exc))
    return [t for t in frame.findings if t]


def test_meteor_hand_computed():
    # identical 6 tokens: 1 chunk -> 1 - 0.5 (1/6)^3
    assert meteor("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(
        1 - 0.5 / 216
    )
    # nltk's right-to-left greedy alignment gives 5 chunks for this reordering
    assert meteor("on the mat the cat sat", "the cat sat on the mat") == pytest.approx(
        1 - 0.5 * (5 / 6) ** 3
    )
    # P = 2/3, R = 2/4, one chunk: Fmean = PR / (0.9 P + 0.1 R)
    p, r = 2 / 3, 2 / 4
    fmean = p * r / (0.9 * p + 0.1 * r)
    assert meteor("no pleural effusion", "pleural effusion is absent") == pytest.approx(
        fmean * (1 - 0.5 * (1 / 2) ** 3)
    )
    assert meteor("", "x") == 0.0 and meteor("a b", "c d") == 0.0


def test_meteor_equals_nltk_without_wordnet(findings):
    pairs = list(zip(findings[:150], findings[1:151], strict=True))
    pairs += [(f, corrupt_report(f, "negation")) for f in findings[200:260]]
    for hyp, ref in pairs:
        h, r = tokenize(hyp), tokenize(ref)
        exact = meteor_score([r], h, stemmer=_Identity(), wordnet=_NoWordNet())
        stemmed = meteor_score([r], h, stemmer=PorterStemmer(), wordnet=_NoWordNet())
        assert meteor(h, r) == pytest.approx(exact, abs=1e-12)
        assert meteor(h, r, stem=True) == pytest.approx(stemmed, abs=1e-12)


def _lcs(a, b):
    dp = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            dp[i + 1, j + 1] = dp[i, j] + 1 if x == y else max(dp[i, j + 1], dp[i + 1, j])
    return dp[-1, -1]


def test_rouge_l_is_the_lcs_f1(findings):
    for hyp, ref in zip(findings[:40], findings[1:41], strict=True):
        h, r = tokenize(hyp), tokenize(ref)
        lcs = _lcs(h, r)
        f1 = 0.0 if lcs == 0 else 2 * lcs / (len(h) + len(r))
        assert rouge_l(hyp, ref) == pytest.approx(f1, abs=1e-12)


def test_report_metrics_bleu_is_nltk_corpus_bleu_and_identity_is_perfect(findings):
    preds, refs = findings[:30], findings[30:60]
    m = report_metrics(preds, refs)
    expected = corpus_bleu([[tokenize(r)] for r in refs], [tokenize(p) for p in preds])
    assert m["bleu4"] == pytest.approx(expected)
    same = report_metrics(refs, refs)
    for key in ("rouge_l", "bleu1", "bleu4", "chexpert_f1_micro", "chexpert_f1_macro", "label_f1"):
        assert same[key] == pytest.approx(1.0), key
    assert 0.9 < same["meteor"] < 1.0  # the fragmentation penalty never vanishes
    assert set(m) >= {
        "rouge_l",
        "bleu1",
        "bleu4",
        "meteor",
        "chexpert_f1_micro",
        "chexpert_f1_macro",
    }
    with pytest.raises(DataError):
        report_metrics(preds, refs[:-1])


def test_chexpert_macro_and_micro_closed_form():
    refs = ["Left pleural effusion.", "Cardiomegaly.", "No acute disease."]
    preds = ["Pleural effusion.", "Pneumothorax.", "No acute disease."]
    m = report_metrics(preds, refs)
    # positives: ref {PE}, {CM}, {NF}; pred {PE}, {PTX}, {NF}: tp 2, fp 1, fn 1
    assert m["chexpert_f1_micro"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # classes seen: PE 1, NF 1, CM 0, PTX 0 -> macro 0.5
    assert m["chexpert_f1_macro"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("There is no pleural effusion.", {"Pleural Effusion": 0, "No Finding": 1}),
        ("Small left pleural effusion.", {"Pleural Effusion": 1, "Pleural Effusion@left": 1}),
        ("Possible right lower lobe pneumonia.", {"Pneumonia": -1, "Pneumonia@right": -1}),
        ("Pneumothorax cannot be excluded.", {"Pneumothorax": -1}),
        ("Pneumothorax is not seen.", {"Pneumothorax": 0}),
        ("The heart is not enlarged.", {"Cardiomegaly": 0}),
        ("Cardiomegaly without edema.", {"Cardiomegaly": 1, "Edema": 0}),
        ("No edema but there is bibasilar atelectasis.", {"Edema": 0, "Atelectasis": 1}),
        ("No pneumothorax, effusion, or focal consolidation.", {"Consolidation": 0}),
        ("Left PICC line tip in the SVC.", {"Support Devices": 1, "No Finding": 1}),
        ("Heart size 1.5 times normal with enlarged heart.", {"Cardiomegaly": 1}),
    ],
)
def test_chexpert_labels_cases(text, expected):
    labels = chexpert_labels(text)
    assert set(labels) >= set(CHEXPERT_14)
    for key, value in expected.items():
        assert labels[key] == value, (key, labels)


def test_negation_flip_and_laterality_swap_change_the_labels():
    text = "No pneumothorax. Left lower lobe atelectasis."
    labels = chexpert_labels(text)
    flipped = chexpert_labels(corrupt_report(text, "negation"))
    swapped = chexpert_labels(corrupt_report(text, "laterality"))
    assert labels["Pneumothorax"] == 0 and flipped["Pneumothorax"] == 1
    assert (labels["Atelectasis@left"], labels["Atelectasis@right"]) == (1, 0)
    assert (swapped["Atelectasis@left"], swapped["Atelectasis@right"]) == (0, 1)
    assert label_f1(corrupt_report(text, "laterality"), text) < 1.0


_NEG = re.compile(r"\b(?:no|not|without|negative|free of)\b", re.I)
_SIDE = re.compile(r"\b(?:left|right)\b", re.I)


def _sentences(text):
    return re.split(r"(?<=[.;])\s", text)


def _negated_finding(text):
    """A negation word followed, in its sentence, by a CheXpert keyword."""
    for s in _sentences(text.lower()):
        m = _NEG.search(s)
        if m and any(p.search(s[m.end() :]) for p in _FINDING_RE.values()):
            return True
    return False


def _lateral_finding(text):
    """A sentence with left/right and a CheXpert keyword and no negation word."""
    for s in _sentences(text.lower()):
        if (
            _SIDE.search(s)
            and not _NEG.search(s)
            and any(p.search(s) for p in _FINDING_RE.values())
        ):
            return True
    return False


@pytest.mark.parametrize(
    ("kind", "select"), [("negation", _negated_finding), ("laterality", _lateral_finding)]
)
def test_true_reports_rank_above_corrupted_copies(findings, kind, select):
    chosen = [t for t in findings if select(t)][:200]
    assert len(chosen) == 200
    rng = random.Random(0)
    label_wins = score_wins = shuffled_wins = 0
    for true in chosen:
        bad = corrupt_report(true, kind)
        sentences = _sentences(true)
        rng.shuffle(sentences)
        shuffled = " ".join(sentences)  # same content, other order
        label_wins += label_f1(true, true) > label_f1(bad, true)
        score_wins += report_score(true, true) > report_score(bad, true)
        shuffled_wins += label_f1(shuffled, true) > label_f1(bad, true)
    n = len(chosen)
    assert score_wins / n >= 0.9
    assert label_wins / n >= 0.9  # the label term alone sees the clinical error
    assert shuffled_wins / n >= 0.9  # and is blind to sentence order


def test_docstring_examples():
    import doctest

    from clinfuse.methods.deepmedix import metrics as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
