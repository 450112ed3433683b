r"""Report-generation metrics that run offline: ROUGE-L, BLEU, METEOR and a keyword label F1.

- :func:`tokenize`: lower-cased alphanumeric word tokens (punctuation dropped, as the COCO
  caption tokenizer does); BLEU and METEOR use it.
- :func:`meteor`: METEOR (Banerjee & Lavie, 2005) with **exact-match alignment only** by default
  (no WordNet here), optionally plus a Porter-stem stage:

  .. math::

      P = m / |h|,\quad R = m / |r|,\quad
      F_{\mathrm{mean}} = \frac{P R}{\alpha P + (1-\alpha) R},\quad
      \mathrm{score} = F_{\mathrm{mean}}
          \Bigl(1 - \gamma \bigl(\tfrac{\mathrm{chunks}}{m}\bigr)^{\beta}\Bigr)

  with :math:`\alpha = 0.9, \beta = 3, \gamma = 0.5` and the alignment of nltk's
  ``meteor_score`` (greedy, right to left), so it equals nltk's score when nltk is given an
  identity stemmer and an empty WordNet.
- :func:`chexpert_labels`: a **CheXbert-free approximation** of the 14 CheXpert labels: keyword
  patterns per finding, NegEx-style negation and uncertainty cues scoped to the clause, and
  laterality keys ``"<finding>@left"`` / ``"@right"`` for the findings that have a side. It is
  not the CheXpert labeler (no dependency parse, no learned model); numbers from it are
  comparable only with each other [inferred].
- :func:`report_metrics` (corpus level) and :func:`report_score` (one pair, one scalar, for the
  Report Arena's local judge).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from clinfuse.core.errors import DataError, require

__all__ = [
    "CHEXPERT_14",
    "LATERAL_FINDINGS",
    "tokenize",
    "meteor",
    "rouge_l",
    "chexpert_labels",
    "positive_keys",
    "label_f1",
    "report_metrics",
    "report_score",
]

CHEXPERT_14: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 CheXpert observations, in the CheXpert column order."""

_PATTERNS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"enlarged cardiomediastin\w*",
        r"cardiomediastinal (?:silhouette|contour)s? (?:is |are )?(?:\w+ )?(?:enlarged|widened)",
        r"(?:widened|widening of the|enlarged) mediastin\w*",
        r"mediastin\w* (?:is |are )?(?:\w+ )?(?:widened|enlarged)",
    ),
    "Cardiomegaly": (
        r"cardiomegaly|cardiac enlargement|(?:enlarged|large) (?:heart|cardiac silhouette)",
        r"(?:heart|heart size|cardiac silhouette|cardiac size) (?:is |are )?(?:\w+ )?"
        r"(?:enlarged|increased)",
    ),
    "Lung Opacity": (
        r"opacit\w*|opacification|infiltrat\w*|airspace disease|air space disease",
        r"(?:increased )?interstitial markings",
        r"densit(?:y|ies)|haziness",
    ),
    "Lung Lesion": (
        r"nodules?|nodular\w*|mass(?:es)?|lesions?|tumou?rs?|neoplasm\w*|carcinoma",
        r"granulom\w*",
    ),
    "Edema": (r"edema|oedema|(?:vascular|pulmonary) congestion|congestive",),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (r"pneumonia|infectious process|infection",),
    "Atelectasis": (r"atelecta\w*|collapse|volume loss",),
    "Pneumothorax": (r"pneumothora\w*",),
    "Pleural Effusion": (r"effusions?|pleural fluid|hydrothorax|blunting|blunted",),
    "Pleural Other": (
        r"pleural (?:thickening|plaques?|calcification)|fibrothorax",
        r"scar\w*|fibros\w*|fibrotic",
    ),
    "Fracture": (r"fractur\w*",),
    "Support Devices": (
        r"pacemaker|defibrillator|aicd|catheter|port-a-cath|stents?|sternotomy wires?",
        r"(?:endotracheal|tracheostomy|chest|feeding|nasogastric|ng|et|enteric) tubes?",
        r"(?:picc|central|venous|port|midline) (?:line|catheter)",
        r"surgical clips|hardware|prosthe\w*|drains?",
    ),
}
"""Keyword patterns per finding (lower-case text; alternatives joined with ``|``) [inferred]."""
_FINDING_RE = {k: re.compile(r"\b(?:" + "|".join(v) + r")\b") for k, v in _PATTERNS.items()}

LATERAL_FINDINGS: tuple[str, ...] = (
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""Findings that get ``"@left"`` / ``"@right"`` laterality keys."""

_UNCERTAIN_PRE = re.compile(
    r"\b(?:possibl[ey]|probabl[ey]|may|might|could|questionabl[ey]|question of|suspicious|"
    r"suspected|suspicion|suggest\w*|concerning|concern for|likely|versus|vs|equivocal|"
    r"borderline|cannot exclude|can not exclude|differential|consider\w*|indeterminate|"
    r"uncertain|presumed)\b"
)
_UNCERTAIN_POST = re.compile(
    r"\b(?:(?:is|are) )?(?:not (?:be )?excluded|cannot be (?:excluded|ruled out)|"
    r"can not be (?:excluded|ruled out)|not ruled out|"
    r"(?:is |are )?(?:possible|suspected|questioned))\b"
)
_NEGATION_PRE = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|absent|resolved|resolution of|"
    r"removal of|clear of|rule out|ruled out|never)\b"
)
_NEGATION_POST = re.compile(
    r"\b(?:(?:is|are|was|were|has been|have been) )?(?:not (?:seen|identified|visualized|present|"
    r"noted|appreciated|evident|demonstrated)|absent|resolved|removed|cleared)\b"
)
_CLAUSE_BREAK = re.compile(
    r"\b(?:but|however|although|though|except|whereas|yet|aside from|apart from|which|"
    r"otherwise)\b|[;:]"
)
_SENTENCE = re.compile(r"(?<!\d)\.(?!\d)|[!?\n]")
_LEFT = re.compile(r"\bleft\w*\b")
_RIGHT = re.compile(r"\bright\w*\b")
_BOTH = re.compile(r"\b(?:bilateral\w*|bibasilar|bibasal|both)\b")

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric word tokens; punctuation is dropped.

    Example:
        >>> tokenize("No pleural effusion. Heart size, 1.5x normal!")
        ['no', 'pleural', 'effusion', 'heart', 'size', '1', '5x', 'normal']
    """
    return _TOKEN.findall(text.lower())


# ---------------------------------------------------------------------------------------------
# METEOR


def _match(hyp: list[tuple[int, str]], ref: list[tuple[int, str]]):
    """nltk's greedy exact matcher: hypothesis right to left, each takes the last free ref slot."""
    positions: dict[str, list[int]] = {}
    for j, (_, w) in enumerate(ref):
        positions.setdefault(w, []).append(j)
    pairs, used_h, used_r = [], set(), set()
    for i in range(len(hyp) - 1, -1, -1):
        slots = positions.get(hyp[i][1])
        if slots:
            j = slots.pop()
            used_h.add(i)
            used_r.add(j)
            pairs.append((hyp[i][0], ref[j][0]))
    rest_h = [p for i, p in enumerate(hyp) if i not in used_h]
    rest_r = [p for j, p in enumerate(ref) if j not in used_r]
    return pairs, rest_h, rest_r


@functools.cache
def _porter() -> Callable[[str], str]:
    return require("nltk.stem.porter", "llm").PorterStemmer().stem


def meteor(
    hypothesis: str | Sequence[str],
    reference: str | Sequence[str],
    *,
    stem: bool = False,
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
) -> float:
    r"""Sentence METEOR with exact-match (and optionally Porter-stem) alignment; see the module.

    Strings are tokenised with :func:`tokenize`; token lists are only lower-cased. 0 when
    nothing matches.

    Example:
        >>> round(meteor("the cat sat on the mat", "the cat sat on the mat"), 4)
        0.9977
        >>> round(meteor("on the mat the cat sat", "the cat sat on the mat"), 4)  # 5 chunks
        0.7106
    """
    h = tokenize(hypothesis) if isinstance(hypothesis, str) else [w.lower() for w in hypothesis]
    r = tokenize(reference) if isinstance(reference, str) else [w.lower() for w in reference]
    if not h or not r:
        return 0.0
    pairs, rest_h, rest_r = _match(list(enumerate(h)), list(enumerate(r)))
    if stem:
        st = _porter()
        more, _, _ = _match([(i, st(w)) for i, w in rest_h], [(j, st(w)) for j, w in rest_r])
        pairs += more
    m = len(pairs)
    if m == 0:
        return 0.0
    pairs.sort(key=lambda p: p[0])
    chunks = 1 + sum(
        1
        for a, b in zip(pairs, pairs[1:], strict=False)
        if not (b[0] == a[0] + 1 and b[1] == a[1] + 1)
    )
    p, rc = m / len(h), m / len(r)
    fmean = p * rc / (alpha * p + (1 - alpha) * rc)
    return fmean * (1 - gamma * (chunks / m) ** beta)


# ---------------------------------------------------------------------------------------------
# ROUGE-L and BLEU


@functools.cache
def _rouge_l_scorer() -> Any:
    return require("rouge_score.rouge_scorer", "llm").RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    r"""ROUGE-L F1 (:math:`\beta = 1`, longest common subsequence; rouge-score, no stemming).

    Example:
        >>> round(rouge_l("no pleural effusion", "there is no pleural effusion"), 4)
        0.75
    """
    return float(_rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure)


def _bleu_module() -> Any:
    return require("nltk.translate.bleu_score", "llm")


def _sentence_bleu(hyp: list[str], ref: list[str], weights: tuple[float, ...]) -> float:
    if not hyp or not ref:
        return 0.0
    bleu = _bleu_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            bleu.sentence_bleu(
                [ref], hyp, weights=weights, smoothing_function=bleu.SmoothingFunction().method1
            )
        )


def _corpus_bleu(hyps: list[list[str]], refs: list[list[str]], weights: tuple[float, ...]) -> float:
    keep = [(h, r) for h, r in zip(hyps, refs, strict=True) if r]
    if not keep or not any(h for h, _ in keep):
        return 0.0
    bleu = _bleu_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            bleu.corpus_bleu([[r] for _, r in keep], [h for h, _ in keep], weights=weights)
        )


# ---------------------------------------------------------------------------------------------
# keyword CheXpert labeller


def _clauses(text: str) -> list[str]:
    out = []
    for sentence in _SENTENCE.split(text.lower()):
        out.extend(c for c in _CLAUSE_BREAK.split(sentence) if c.strip())
    return out


def _status(clause: str, start: int, end: int) -> int:
    pre, post = clause[:start], clause[end:]
    if _UNCERTAIN_PRE.search(pre) or _UNCERTAIN_POST.match(post.lstrip(" ,")):
        return -1
    if _NEGATION_PRE.search(pre + " " + clause[start:end]) or _NEGATION_POST.match(
        post.lstrip(" ,")
    ):
        return 0
    return 1


def _sides(clause: str, start: int, end: int) -> set[str]:
    if _BOTH.search(clause):
        return {"left", "right"}
    best: tuple[int, str] | None = None
    for side, pat in (("left", _LEFT), ("right", _RIGHT)):
        for m in pat.finditer(clause):
            dist = start - m.end() if m.end() <= start else m.start() - end
            if best is None or dist < best[0]:
                best = (max(dist, 0), side)
    return {best[1]} if best else set()


def _merge(old: int, new: int) -> int:
    """Positive beats uncertain beats negative (CheXpert's aggregation over mentions)."""
    rank = {1: 2, -1: 1, 0: 0}
    return old if rank[old] >= rank[new] else new


def chexpert_labels(text: str) -> dict[str, int]:
    """Keyword CheXpert-14 labels plus laterality keys: 1 positive, -1 uncertain, 0 negative/absent.

    Keys: the 14 names of :data:`CHEXPERT_14`, then ``"<finding>@left"`` and ``"<finding>@right"``
    for each of :data:`LATERAL_FINDINGS` (1/-1 when a positive/uncertain mention has that side in
    its clause; ``bilateral``/``bibasilar``/``both`` give both sides). "No Finding" is 1 when no
    finding other than Support Devices is positive or uncertain. An approximation (module doc).

    Example:
        >>> lab = chexpert_labels("No pneumothorax. Left pleural effusion. Possible atelectasis.")
        >>> lab["Pneumothorax"], lab["Pleural Effusion"], lab["Atelectasis"], lab["No Finding"]
        (0, 1, -1, 0)
        >>> lab["Pleural Effusion@left"], lab["Pleural Effusion@right"]
        (1, 0)
    """
    labels = dict.fromkeys(CHEXPERT_14, 0)
    labels.update({f"{f}@{s}": 0 for f in LATERAL_FINDINGS for s in ("left", "right")})
    for clause in _clauses(text):
        for finding, pat in _FINDING_RE.items():
            for m in pat.finditer(clause):
                status = _status(clause, m.start(), m.end())
                labels[finding] = _merge(labels[finding], status)
                if status != 0 and finding in LATERAL_FINDINGS:
                    for side in _sides(clause, m.start(), m.end()):
                        key = f"{finding}@{side}"
                        labels[key] = _merge(labels[key], status)
    findings = [f for f in CHEXPERT_14 if f not in ("No Finding", "Support Devices")]
    labels["No Finding"] = int(all(labels[f] == 0 for f in findings))
    return labels


def positive_keys(labels: dict[str, int], *, laterality: bool = True) -> set[str]:
    """Keys labelled positive or uncertain (uncertain counts as positive [inferred])."""
    return {k for k, v in labels.items() if v != 0 and (laterality or "@" not in k)}


def label_f1(prediction: str, reference: str, *, laterality: bool = True) -> float:
    """Per-report F1 between the positive label sets of two reports (1 when both are empty).

    Example:
        >>> label_f1("Left pleural effusion.", "Right pleural effusion.")
        0.5
    """
    p = positive_keys(chexpert_labels(prediction), laterality=laterality)
    r = positive_keys(chexpert_labels(reference), laterality=laterality)
    if not p and not r:
        return 1.0
    return 2 * len(p & r) / (len(p) + len(r))


# ---------------------------------------------------------------------------------------------
# report-level metrics


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references) or not len(references):
        raise DataError(
            "report metrics need one prediction per reference",
            expected="two equally long, non-empty sequences of strings",
            found=f"{len(predictions)} predictions, {len(references)} references",
        )


def report_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    r"""Corpus-level report metrics.

    Keys: ``rouge_l`` (mean per-pair ROUGE-L F1), ``bleu1`` / ``bleu4`` (word-level corpus BLEU,
    nltk, no smoothing), ``meteor`` (mean exact-match METEOR), ``chexpert_f1_micro`` /
    ``chexpert_f1_macro`` (keyword CheXpert-14 labels; uncertain counts as positive; macro averages
    the findings that occur in predictions or references), ``label_f1`` (mean per-report F1 with
    laterality keys) and ``n``.

    Shape:
        predictions, references: ``(n,)`` strings. Output: dict of floats.
    """
    _check_pairs(predictions, references)
    hyps = [tokenize(p) for p in predictions]
    refs = [tokenize(r) for r in references]
    pred_labels = [chexpert_labels(p) for p in predictions]
    ref_labels = [chexpert_labels(r) for r in references]
    y_pred = np.array([[lab[f] != 0 for f in CHEXPERT_14] for lab in pred_labels])
    y_true = np.array([[lab[f] != 0 for f in CHEXPERT_14] for lab in ref_labels])
    tp = (y_pred & y_true).sum(0)
    fp = (y_pred & ~y_true).sum(0)
    fn = (~y_pred & y_true).sum(0)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    support = tp + fp + fn
    per_class = 2 * tp[support > 0] / (2 * tp + fp + fn)[support > 0]
    lf1 = []
    for pl, rl in zip(pred_labels, ref_labels, strict=True):
        p, r = positive_keys(pl), positive_keys(rl)
        lf1.append(1.0 if not p and not r else 2 * len(p & r) / (len(p) + len(r)))
    return {
        "rouge_l": float(
            np.mean([rouge_l(p, r) for p, r in zip(predictions, references, strict=True)])
        ),
        "bleu1": _corpus_bleu(hyps, refs, (1.0,)),
        "bleu4": _corpus_bleu(hyps, refs, (0.25, 0.25, 0.25, 0.25)),
        "meteor": float(np.mean([meteor(h, r) for h, r in zip(hyps, refs, strict=True)])),
        "chexpert_f1_micro": float(micro),
        "chexpert_f1_macro": float(per_class.mean()) if per_class.size else 1.0,
        "label_f1": float(np.mean(lf1)),
        "n": float(len(references)),
    }


def report_components(prediction: str, reference: str) -> dict[str, float]:
    """The per-pair components averaged by :func:`report_score`.

    ``bleu1`` / ``bleu4`` are sentence BLEU with nltk smoothing method 1.
    """
    h, r = tokenize(prediction), tokenize(reference)
    return {
        "rouge_l": rouge_l(prediction, reference),
        "bleu1": _sentence_bleu(h, r, (1.0,)),
        "bleu4": _sentence_bleu(h, r, (0.25, 0.25, 0.25, 0.25)),
        "meteor": meteor(h, r),
        "label_f1": label_f1(prediction, reference),
    }


def report_score(prediction: str, reference: str) -> float:
    """One scalar in [0, 1] per pair: the mean of ROUGE-L, BLEU-1, BLEU-4, METEOR and label F1.

    Example:
        >>> same = report_score("No pleural effusion.", "No pleural effusion.")
        >>> flipped = report_score("Pleural effusion.", "No pleural effusion.")
        >>> round(same, 3), round(flipped, 3)
        (0.909, 0.449)
    """
    c = report_components(prediction, reference)
    return float(np.mean(list(c.values())))
