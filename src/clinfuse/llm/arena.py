r"""Report Arena: a pairwise LLM-judge tournament of report generators, ranked by Bradley-Terry.

Per study, pairs of models are shown to one or more judges together with the reference report;
each judge sees every pair **in both orders** (``AB`` and ``BA``) and a pair's outcome is kept
only when both orders agree; an inconsistent pair (position bias, a coin-flip judge) counts as a
tie, as in MT-Bench. Strengths are fitted as a Bradley-Terry model by logistic regression (ties
are half a win for each side), reported on the Elo scale with bootstrap confidence intervals
over studies, as Chatbot Arena does::

    >>> import pandas as pd
    >>> reports = pd.DataFrame({
    ...     "study": [1, 1, 2, 2], "model": ["good", "bad"] * 2,
    ...     "report": ["left effusion", "normal", "cardiomegaly", "normal"],
    ...     "reference": ["left effusion"] * 2 + ["cardiomegaly"] * 2})
    >>> result = run_arena(reports, [ScoreJudge(token_f1)], n_boot=20)
    >>> list(result.leaderboard["model"])
    ['good', 'bad']

Judges are :class:`PairJudge` objects: :class:`LLMPairJudge` asks any
:class:`~clinfuse.llm.base.TextBackend` (an OpenAI-compatible server, a local model) with the
rubric :data:`RUBRIC` and caches every call on disk by (judge model id, prompt hash);
:class:`ScoreJudge` is a deterministic local judge for tests and offline demos.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.registry import Registry
from clinfuse.llm.base import GenerationConfig, Message, TextBackend, make_backend
from clinfuse.llm.cache import CachedBackend

log = logging.getLogger(__name__)

__all__ = [
    "RUBRIC",
    "SCORES",
    "ArenaResult",
    "LLMPairJudge",
    "PairJudge",
    "ScoreJudge",
    "Verdict",
    "bradley_terry",
    "cohen_kappa",
    "judge_agreement",
    "make_judge",
    "parse_pair_verdict",
    "plot_leaderboard",
    "reconcile",
    "run_arena",
    "token_f1",
]

Verdict = Literal["A", "B", "tie"]
VERDICTS: tuple[str, ...] = ("A", "B", "tie")

REPORT_COLUMNS: tuple[str, ...] = ("study", "model", "report", "reference")
"""Columns :func:`run_arena` needs, one row per (study, model)."""
OUTCOME_COLUMNS: tuple[str, ...] = ("study", "model_a", "model_b", "outcome")
"""Columns :func:`bradley_terry` needs; ``outcome`` is the score of ``model_a`` in [0, 1]."""

L2 = 1e-6
r"""Default ridge :math:`\lambda` of the Bradley-Terry fit (Chatbot Arena's ``C=1e6``): fixes the
common shift and keeps a model that never loses finite (but large); its effect on a model with
``n`` comparisons is :math:`O(\lambda / n)`."""
CI_LEVEL = 0.95
"""Coverage of the bootstrap percentile intervals."""


# ---------------------------------------------------------------------------------------------
# judges


@runtime_checkable
class PairJudge(Protocol):
    """Anything that says which of two reports better matches a reference.

    ``judge_id`` names the judge and its version in the votes table and the agreement matrix.
    ``compare`` returns the winner by **position** (``"A"``: the first report shown) and a
    rationale; the arena calls it in both orders and reconciles.
    """

    judge_id: str

    def compare(self, reference: str, report_a: str, report_b: str) -> tuple[Verdict, str]: ...


RUBRIC = """You are an expert radiologist. You will see the REFERENCE report a radiologist \
wrote for one chest X-ray study, and two candidate reports for the same study, REPORT A and \
REPORT B.
Decide which candidate agrees better with the REFERENCE. Criteria, most important first:
1. Clinical correctness: the presence or absence of each finding, its laterality (left, right, \
bilateral), location and severity agree with the reference.
2. Completeness: every clinically relevant finding of the reference is reported.
3. No hallucination: nothing is stated that the reference does not support.
4. Concision: no padding, repetition or text irrelevant to the study.
The order in which the reports are shown and their length are not evidence of quality. Answer \
"tie" only when both reports are equally good or equally bad.
Reply with one JSON object and nothing else:
{"winner": "A" or "B" or "tie", "rationale": "<one or two sentences>"}"""
"""The fixed system prompt of :class:`LLMPairJudge` (criteria of the DeepMedix-R1 notes, 2.4)."""

UNPARSED = "unparsed judge answer"
"""Prefix of the rationale of a verdict that could not be read (scored as a tie)."""

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_WINNER_WORDS: dict[str, Verdict] = {
    "a": "A",
    "report a": "A",
    "b": "B",
    "report b": "B",
    "tie": "tie",
    "draw": "tie",
    "equal": "tie",
    "both": "tie",
    "neither": "tie",
    "none": "tie",
}


def parse_pair_verdict(text: str) -> tuple[Verdict, str]:
    """Read ``{"winner": "A"|"B"|"tie", "rationale": ...}`` from a judge's answer; never raises.

    Looks inside code fences first, then at every ``{`` of the text, and takes the first JSON
    object with a ``winner`` key whose value names a side (``"A"``, ``"report b"``, ``"Tie"``,
    ...). Anything else is a tie whose rationale starts with :data:`UNPARSED`.

    Example:
        >>> parse_pair_verdict('Sure!\\n```json\\n{"winner": "b", "rationale": "left"}\\n```')
        ('B', 'left')
        >>> parse_pair_verdict("A is better")[0]
        'tie'
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        for i, ch in enumerate(cand):
            if ch != "{":
                continue
            try:
                obj, _ = decoder.raw_decode(cand, i)
            except json.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            keys = {str(k).lower(): v for k, v in obj.items()}
            value = keys.get("winner")
            if not isinstance(value, str):
                continue
            verdict = _WINNER_WORDS.get(value.strip().strip("\"'").strip().lower())
            if verdict is None:
                continue
            rationale = keys.get("rationale", keys.get("reason", ""))
            return verdict, rationale if isinstance(rationale, str) else json.dumps(rationale)
    return "tie", f"{UNPARSED}: {text[:120]!r}"


class LLMPairJudge:
    """A :class:`PairJudge` that asks a text backend with :data:`RUBRIC` and parses its JSON.

    With ``cache_dir`` the backend is wrapped in :class:`~clinfuse.llm.cache.CachedBackend`, so
    every call is stored under its prompt hash, which covers the judge's model id, the rubric,
    the three reports and the generation settings: a rerun of the arena costs no calls. Backend
    failures (:class:`~clinfuse.llm.base.LLMError`) propagate: a dead judge server must not be
    scored as a run of ties. Unreadable answers are ties and are counted in ``n_unparsed``.

    Example:
        >>> from clinfuse.llm.local import CallableBackend
        >>> fake = CallableBackend(lambda ms: '{"winner": "A", "rationale": "ok"}', "fake-v1")
        >>> LLMPairJudge(fake).compare("effusion", "effusion", "normal")
        ('A', 'ok')
    """

    def __init__(
        self,
        backend: TextBackend,
        *,
        cache_dir: str | Path | None = None,
        config: GenerationConfig | None = None,
    ) -> None:
        if not isinstance(backend, TextBackend):
            raise ConfigError(
                "LLMPairJudge wraps a text backend",
                expected="an object with model_id and generate(messages, config)",
                found=type(backend).__name__,
                fix="e.g. LLMPairJudge(make_backend('openai:gpt-4o-mini@http://host/v1'))",
            )
        self.backend: TextBackend = (
            CachedBackend(backend, cache_dir) if cache_dir is not None else backend
        )
        self.config = config or GenerationConfig(temperature=0.0, max_tokens=512, json_mode=True)
        self.judge_id: str = backend.model_id
        self.n_unparsed = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LLMPairJudge({self.backend!r})"

    def messages(self, reference: str, report_a: str, report_b: str) -> list[Message]:
        """The judge request for one ordered pair."""
        user = f"REFERENCE:\n{reference}\n\nREPORT A:\n{report_a}\n\nREPORT B:\n{report_b}"
        return [Message("system", RUBRIC), Message("user", user)]

    def compare(self, reference: str, report_a: str, report_b: str) -> tuple[Verdict, str]:
        completion = self.backend.generate(
            self.messages(reference, report_a, report_b), self.config
        )
        verdict, rationale = parse_pair_verdict(completion.text)
        if rationale.startswith(UNPARSED):
            with self._lock:
                self.n_unparsed += 1
            log.warning("judge %s: %s", self.judge_id, rationale)
        return verdict, rationale


class ScoreJudge:
    """Deterministic local judge: the report with the higher ``score(reference, report)`` wins.

    A difference of at most ``margin`` is a tie. It has no position bias, so both orders always
    agree.

    Example:
        >>> ScoreJudge(token_f1).compare("left effusion", "effusion", "normal heart")[0]
        'A'
    """

    def __init__(
        self,
        score: Callable[[str, str], float],
        *,
        judge_id: str = "local:score",
        margin: float = 0.0,
    ) -> None:
        if not callable(score):
            raise ConfigError(
                "ScoreJudge needs a scoring function",
                expected="score(reference, report) -> float",
                found=type(score).__name__,
            )
        if not (isinstance(margin, int | float) and margin >= 0):
            raise ConfigError("bad ScoreJudge margin", expected="a number >= 0", found=margin)
        self.score = score
        self.judge_id = judge_id
        self.margin = float(margin)

    def __repr__(self) -> str:
        return f"ScoreJudge(judge_id={self.judge_id!r}, margin={self.margin})"

    def compare(self, reference: str, report_a: str, report_b: str) -> tuple[Verdict, str]:
        sa, sb = float(self.score(reference, report_a)), float(self.score(reference, report_b))
        verdict: Verdict = "A" if sa - sb > self.margin else "B" if sb - sa > self.margin else "tie"
        return verdict, f"score A={sa:.4g}, B={sb:.4g}"


_TOKEN = re.compile(r"[a-z0-9]+")


def token_f1(reference: str, report: str) -> float:
    r"""Bag-of-words F1 between lower-cased alphanumeric tokens, :math:`2|R\cap H|/(|R|+|H|)`.

    Example:
        >>> token_f1("Small left effusion.", "left effusion")
        0.8
    """
    ref, hyp = Counter(_TOKEN.findall(reference.lower())), Counter(_TOKEN.findall(report.lower()))
    total = sum(ref.values()) + sum(hyp.values())
    return 2.0 * sum((ref & hyp).values()) / total if total else 1.0


SCORES: Registry[Callable[[str, str], float]] = Registry("arena score")
"""Local scoring functions for ``make_judge("local:<name>")``."""
SCORES.register("token-f1")(token_f1)


def make_judge(spec: str, *, cache_dir: str | Path | None = None, **kw: Any) -> PairJudge:
    """A judge from a spec: ``local:<score>`` (a :class:`ScoreJudge` over :data:`SCORES`), else a
    backend spec for :func:`~clinfuse.llm.base.make_backend` wrapped in :class:`LLMPairJudge`.

    Example:
        >>> make_judge("local:token-f1").judge_id
        'local:token-f1'
        >>> make_judge("local:echo").judge_id       # a backend spec: an (unhelpful) LLM judge
        'echo'
    """
    if spec.startswith("local:") and spec.removeprefix("local:") in SCORES.names():
        return ScoreJudge(SCORES.get(spec.removeprefix("local:")), judge_id=spec, **kw)
    return LLMPairJudge(make_backend(spec, **kw), cache_dir=cache_dir)


# ---------------------------------------------------------------------------------------------
# the tournament

_POINTS: dict[tuple[str, str], float] = {
    ("AB", "A"): 1.0,
    ("AB", "B"): 0.0,
    ("BA", "A"): 0.0,
    ("BA", "B"): 1.0,
    ("AB", "tie"): 0.5,
    ("BA", "tie"): 0.5,
}
"""Score of ``model_a`` given the order shown (``BA``: ``model_b`` shown first) and the verdict."""


def reconcile(first: float, second: float) -> float:
    """The outcome of a pair from its two orders: kept when they agree, else a tie.

    Example:
        >>> reconcile(1.0, 1.0), reconcile(1.0, 0.0), reconcile(1.0, 0.5)
        (1.0, 0.5, 0.5)
    """
    return first if first == second else 0.5


def _check_reports(reports: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(reports, pd.DataFrame):
        raise DataError(
            "run_arena takes a DataFrame of reports",
            expected=f"columns {', '.join(REPORT_COLUMNS)}",
            found=type(reports).__name__,
            fix="pd.DataFrame({'study': ..., 'model': ..., 'report': ..., 'reference': ...})",
        )
    missing = [c for c in REPORT_COLUMNS if c not in reports.columns]
    if missing:
        raise DataError(
            f"the reports table lacks column(s) {', '.join(missing)}",
            expected=f"columns {', '.join(REPORT_COLUMNS)} (one row per study and model)",
            found=f"columns {', '.join(map(str, reports.columns))}",
            fix="rename your columns; put the radiologist's report in 'reference'",
        )
    df = reports.loc[:, list(REPORT_COLUMNS)].copy()
    df["model"] = df["model"].astype(str)
    for col in ("report", "reference"):
        bad = ~df[col].map(lambda v: isinstance(v, str))
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} row(s) have no text in {col!r}",
                expected="a string in every row (an empty string for an empty report)",
                found=df.loc[bad, ["study", "model", col]].head(3).to_dict("records"),
                fix=f"fill missing values: reports[{col!r}] = reports[{col!r}].fillna('')",
            )
    dup = df.duplicated(["study", "model"])
    if dup.any():
        raise DataError(
            "a model has more than one report for a study",
            expected="one row per (study, model)",
            found=df.loc[dup, ["study", "model"]].head(3).to_dict("records"),
            fix="keep one report per study and model (e.g. drop_duplicates)",
        )
    n_ref = df.groupby("study", sort=False)["reference"].nunique()
    if (n_ref > 1).any():
        raise DataError(
            "a study has more than one reference report",
            expected="one reference per study, repeated on each of its rows",
            found=f"studies {list(n_ref[n_ref > 1].index[:3])}",
            fix="join the reference from one table of (study, reference)",
        )
    n_models = df.groupby("study", sort=False)["model"].nunique()
    few = n_models < 2
    if few.any():
        raise DataError(
            "a study has fewer than two models: nothing to compare",
            expected="at least two models' reports per study",
            found=f"{int(few.sum())} such studies, e.g. {list(few[few].index[:3])}",
            fix="drop those studies, or add the other models' reports",
        )
    return df


def _check_judges(judges: Sequence[PairJudge]) -> list[PairJudge]:
    judges = list(judges) if isinstance(judges, Sequence) else []
    if not judges:
        raise DataError(
            "run_arena needs at least one judge",
            expected="a sequence of PairJudge (LLMPairJudge, ScoreJudge, ...)",
            found="none",
            fix="e.g. judges=[make_judge('local:token-f1')]",
        )
    bad = [type(j).__name__ for j in judges if not isinstance(j, PairJudge)]
    if bad:
        raise DataError(
            "a judge is not a PairJudge",
            expected="objects with judge_id and compare(reference, report_a, report_b)",
            found=", ".join(bad),
        )
    ids = [j.judge_id for j in judges]
    if len(set(ids)) < len(ids):
        raise DataError(
            "two judges share a judge_id",
            expected="distinct judge ids (they name the columns of the agreement matrix)",
            found=ids,
            fix="set judge.judge_id = '...' on one of them",
        )
    return judges


def _pairs(
    df: pd.DataFrame, pairs: Literal["all"] | int, rng: np.random.Generator
) -> list[tuple[Any, str, str, str, str, str]]:
    """(study, model_a, model_b, reference, report_a, report_b), models sorted within a pair."""
    if not (
        pairs == "all" or (isinstance(pairs, int) and not isinstance(pairs, bool) and pairs > 0)
    ):
        raise ConfigError(
            "bad number of pairs per study",
            expected="'all' or an int >= 1",
            found=repr(pairs),
        )
    out = []
    for study, g in df.groupby("study", sort=True):
        text = dict(zip(g["model"], g["report"], strict=True))
        all_pairs = list(itertools.combinations(sorted(text), 2))
        if pairs != "all" and pairs < len(all_pairs):
            keep = np.sort(rng.choice(len(all_pairs), size=pairs, replace=False))
            all_pairs = [all_pairs[i] for i in keep]
        ref = g["reference"].iloc[0]
        out += [(study, a, b, ref, text[a], text[b]) for a, b in all_pairs]
    return out


def _check_verdict(judge: PairJudge, answer: Any) -> tuple[Verdict, str]:
    if not (isinstance(answer, tuple) and len(answer) == 2 and answer[0] in VERDICTS):
        raise ConfigError(
            f"judge {judge.judge_id!r} returned a bad verdict",
            expected="('A' | 'B' | 'tie', rationale)",
            found=repr(answer)[:120],
            fix="make compare() return a (verdict, rationale) tuple",
        )
    return answer[0], str(answer[1])


def run_arena(
    reports: pd.DataFrame,
    judges: Sequence[PairJudge],
    *,
    pairs: Literal["all"] | int = "all",
    n_boot: int = 1000,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
    l2: float = L2,
) -> ArenaResult:
    """Judge model pairs per study in both orders, reconcile, and rank with :func:`bradley_terry`.

    Args:
        reports: one row per (study, model): ``study``, ``model``, ``report``, ``reference``
            (the same reference on every row of a study).
        judges: one or more :class:`PairJudge` with distinct ``judge_id``.
        pairs: ``"all"`` pairs of models per study, or that many pairs drawn at random per study.
        n_boot: bootstrap replicates (over studies) for the confidence intervals; 0 for none.
        seed: seeds the pair sampling and the bootstrap.
        workers: judge calls in flight at once (threads; HTTP judges are I/O bound).
        progress: show a tqdm bar over the judge calls.
        l2: ridge penalty of :func:`bradley_terry`; the tiny default leaves the maximum-likelihood
            strengths untouched, a larger one (0.1) shrinks a leaderboard in which a model never
            loses (a deterministic judge on few studies) to finite values.

    Shape:
        ``P`` pairs and ``J`` judges give ``2 P J`` votes and ``P J`` outcomes.
    """
    df = _check_reports(reports)
    judges = _check_judges(judges)
    if not (isinstance(workers, int) and workers >= 1):
        raise ConfigError("bad number of workers", expected="an int >= 1", found=repr(workers))
    rng = np.random.default_rng(seed)
    todo = _pairs(df, pairs, rng)
    tasks = [
        (judge, study, a, b, order, ref, first, second)
        for study, a, b, ref, ra, rb in todo
        for judge in judges
        for order, first, second in (("AB", ra, rb), ("BA", rb, ra))
    ]

    def call(task: tuple) -> tuple[Verdict, str]:
        judge, *_, ref, first, second = task
        return _check_verdict(judge, judge.compare(ref, first, second))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        answers = list(
            tqdm(pool.map(call, tasks), total=len(tasks), disable=not progress, desc="arena")
        )
    votes = pd.DataFrame(
        [
            {
                "study": study,
                "judge": judge.judge_id,
                "model_a": a,
                "model_b": b,
                "order": order,
                "verdict": verdict,
                "rationale": rationale,
                "score_a": _POINTS[(order, verdict)],
            }
            for (judge, study, a, b, order, *_), (verdict, rationale) in zip(
                tasks, answers, strict=True
            )
        ],
        columns=[
            "study",
            "judge",
            "model_a",
            "model_b",
            "order",
            "verdict",
            "rationale",
            "score_a",
        ],
    )
    outcomes = _reconcile_votes(votes)
    board = bradley_terry(outcomes, n_boot=n_boot, seed=seed, l2=l2)
    if len(judges) > 1:
        for judge in judges:
            own = bradley_terry(outcomes[outcomes["judge"] == judge.judge_id], n_boot=0, l2=l2)
            board[f"elo:{judge.judge_id}"] = board["model"].map(own.set_index("model")["elo"])
    return ArenaResult(votes, outcomes, board, judge_agreement(outcomes))


def _reconcile_votes(votes: pd.DataFrame) -> pd.DataFrame:
    keys = ["study", "judge", "model_a", "model_b"]
    wide = votes.pivot_table(
        index=keys, columns="order", values="score_a", aggfunc="first", sort=False
    )
    out = wide.reset_index()
    out["outcome"] = [reconcile(x, y) for x, y in zip(out["AB"], out["BA"], strict=True)]
    out["consistent"] = out["AB"] == out["BA"]
    return out[[*keys, "outcome", "consistent"]].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Bradley-Terry


def _newton_bt(
    pa: np.ndarray, pb: np.ndarray, wins: np.ndarray, n: np.ndarray, k: int, l2: float
) -> np.ndarray:
    r"""Batched ridge-penalised Bradley-Terry MLE by Newton's method.

    Maximises :math:`\sum_p w_p \log\sigma(\theta_{a_p}-\theta_{b_p}) + (n_p-w_p)
    \log\sigma(\theta_{b_p}-\theta_{a_p}) - \tfrac{\lambda}{2}\lVert\theta\rVert^2`, a concave
    function; steps are capped at 4 nats so that a model that never loses walks out slowly.

    Shape:
        pa, pb: ``(P,)`` model indices of each distinct pair; wins, n: ``(B, P)`` wins of ``a``
        (fractional) and comparisons. Output: ``(B, k)``.
    """
    inc = np.zeros((len(pa), k))
    inc[np.arange(len(pa)), pa] = 1.0
    inc[np.arange(len(pa)), pb] = -1.0
    theta = np.zeros((wins.shape[0], k))
    eye = np.eye(k)
    for _ in range(200):
        d = theta @ inc.T  # (B, P)
        p = 1.0 / (1.0 + np.exp(-d))
        grad = (wins - n * p) @ inc - l2 * theta
        curv = n * p * (1.0 - p)
        hess = np.einsum("pi,bp,pj->bij", inc, curv, inc) + l2 * eye  # minus the Hessian
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        big = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, 4.0 / np.maximum(big, 1e-300))
        theta += step
        if big.max() < 1e-10:
            break
    return theta


def bradley_terry(
    outcomes: pd.DataFrame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    anchor: str | None = None,
    elo_scale: float = 400.0,
    elo_base: float = 1000.0,
    l2: float = L2,
) -> pd.DataFrame:
    r"""Bradley-Terry strengths by logistic regression, on the Elo scale, with bootstrap CIs.

    Model :math:`P(a \succ b) = \sigma(\theta_a - \theta_b)`. A comparison with outcome
    :math:`y \in [0, 1]` (1: ``model_a`` won, 0.5: tie) enters as two rows, a win of ``a`` with
    weight :math:`y` and a win of ``b`` with weight :math:`1-y`, so a tie is half a win each. The
    fit maximises the weighted log-likelihood minus :math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2`
    (:math:`\lambda` = ``l2``, default :data:`L2`); the scores are then centred (mean 0), or
    shifted so that ``anchor`` is 0, and

    .. math:: \mathrm{elo} = \mathrm{base} + \mathrm{scale} \cdot \log_{10}(e) \cdot \theta,

    so that a gap of ``scale`` Elo points is 10:1 odds. ``ci_low`` / ``ci_high`` are the 2.5% and
    97.5% percentiles of the Elo over ``n_boot`` refits on studies resampled with replacement (NaN
    when ``n_boot == 0``; a replicate missing a model does not count for it).

    Shape:
        outcomes: rows ``study, model_a, model_b, outcome`` (other columns, e.g. ``judge``, are
        pooled). Output: one row per model, best first: ``model, strength, elo, ci_low,
        ci_high, wins, losses, ties, rank``.

    Example:
        >>> o = pd.DataFrame({"study": [0, 1, 2], "model_a": ["x"] * 3, "model_b": ["y"] * 3,
        ...                   "outcome": [1.0, 1.0, 0.0]})
        >>> bt = bradley_terry(o, n_boot=0)
        >>> round(float(bt.strength.iloc[0] - bt.strength.iloc[1]), 4)   # log(2/1)
        0.6931
    """
    if not isinstance(outcomes, pd.DataFrame) or any(
        c not in outcomes.columns for c in OUTCOME_COLUMNS
    ):
        found = list(outcomes.columns) if isinstance(outcomes, pd.DataFrame) else outcomes
        raise DataError(
            "bradley_terry needs a table of pairwise outcomes",
            expected=f"a DataFrame with columns {', '.join(OUTCOME_COLUMNS)}",
            found=str(found)[:200],
            fix="use ArenaResult.outcomes, or build one row per comparison",
        )
    if not (isinstance(l2, int | float) and l2 > 0):
        raise ConfigError("bad ridge penalty l2", expected="a number > 0", found=repr(l2))
    if outcomes.empty:
        raise DataError("no outcomes to fit", expected="at least one comparison", found="0 rows")
    y = pd.to_numeric(outcomes["outcome"], errors="coerce").to_numpy(float)
    if not np.all((y >= 0) & (y <= 1)):
        raise DataError(
            "outcomes must lie in [0, 1]",
            expected="1 (model_a won), 0 (model_b won), 0.5 (tie)",
            found=sorted(set(outcomes["outcome"].astype(str)))[:10],
        )
    a_name = outcomes["model_a"].astype(str).to_numpy()
    b_name = outcomes["model_b"].astype(str).to_numpy()
    if np.any(a_name == b_name):
        raise DataError(
            "a model is compared with itself", found=sorted(set(a_name[a_name == b_name]))
        )
    models = np.array(sorted(set(a_name) | set(b_name)))
    k = len(models)
    if k < 2:
        raise DataError("Bradley-Terry needs two models or more", found=list(models))
    ia, ib = np.searchsorted(models, a_name), np.searchsorted(models, b_name)
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    y_lo = np.where(ia == lo, y, 1.0 - y)  # the score of the lower-index model
    pair_id, pair_inv = np.unique(lo * k + hi, return_inverse=True)
    pa, pb = pair_id // k, pair_id % k
    study_codes, study_inv = np.unique(
        outcomes["study"].astype(str).to_numpy(), return_inverse=True
    )
    n_studies, n_pairs = len(study_codes), len(pair_id)
    # per (study, pair): fractional wins of pa and comparisons
    w_sp = np.zeros((n_studies, n_pairs))
    n_sp = np.zeros((n_studies, n_pairs))
    np.add.at(w_sp, (study_inv, pair_inv), y_lo)
    np.add.at(n_sp, (study_inv, pair_inv), 1.0)

    def centre(theta: np.ndarray, present: np.ndarray) -> np.ndarray:
        theta = np.where(present, theta, np.nan)
        if anchor is None:
            return theta - np.nanmean(theta, axis=1, keepdims=True)
        return theta - theta[:, [int(np.searchsorted(models, anchor))]]

    if anchor is not None and anchor not in set(models):
        raise DataError(
            f"unknown anchor model {anchor!r}",
            expected=f"one of {', '.join(models)}",
            found=repr(anchor),
        )

    def fit(counts: np.ndarray) -> np.ndarray:  # (B, S) study multiplicities -> (B, k) centred
        wins, n = counts @ w_sp, counts @ n_sp
        per_model = np.zeros((len(counts), k))
        np.add.at(per_model.T, pa, n.T)
        np.add.at(per_model.T, pb, n.T)
        return centre(_newton_bt(pa, pb, wins, n, k, l2), per_model > 0)

    strength = fit(np.ones((1, n_studies)))[0]
    to_elo = elo_scale * math.log10(math.e)
    ci = np.full((2, k), np.nan)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boots = []
        for start in range(0, n_boot, 250):  # chunks bound the (B, k, k) Hessians
            size = min(250, n_boot - start)
            draws = rng.integers(0, n_studies, size=(size, n_studies))
            counts = np.zeros((size, n_studies))
            np.add.at(counts, (np.arange(size)[:, None], draws), 1.0)
            boots.append(fit(counts))
        q = (1.0 - CI_LEVEL) / 2.0 * 100.0
        ci = np.nanpercentile(elo_base + to_elo * np.concatenate(boots), [q, 100.0 - q], axis=0)
    wins = np.zeros(k)
    losses = np.zeros(k)
    ties = np.zeros(k)
    for idx, score in ((ia, y), (ib, 1.0 - y)):
        np.add.at(wins, idx, score == 1.0)
        np.add.at(losses, idx, score == 0.0)
        np.add.at(ties, idx, (score > 0.0) & (score < 1.0))
    never = models[(wins + ties == 0) | (losses + ties == 0)]
    if len(never) and l2 < 1e-3:  # a real ridge is a deliberate choice: no warning
        log.warning(
            "models %s never lost or never won: their strengths are set by the ridge penalty "
            "l2=%g alone, so they are huge (pass l2=0.1 or so for a shrunk leaderboard)",
            [str(m) for m in never],
            l2,
        )
    board = pd.DataFrame(
        {
            "model": models,
            "strength": strength,
            "elo": elo_base + to_elo * strength,
            "ci_low": ci[0],
            "ci_high": ci[1],
            "wins": wins.astype(int),
            "losses": losses.astype(int),
            "ties": ties.astype(int),
        }
    )
    board["rank"] = board["strength"].rank(ascending=False, method="min").astype(int)
    return board.sort_values(["rank", "model"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# agreement between judges


def cohen_kappa(x: Sequence[Any] | np.ndarray, y: Sequence[Any] | np.ndarray) -> float:
    r"""Cohen's kappa :math:`(p_o - p_e) / (1 - p_e)` of two raters over the same items.

    :math:`p_o` is the observed agreement and :math:`p_e = \sum_c p_x(c)\, p_y(c)` the agreement
    expected by chance; NaN when :math:`p_e = 1` (both raters always give one same label).

    Example:
        >>> cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0])
        0.5
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise DataError(
            "cohen_kappa needs two equally long, non-empty label vectors",
            found=f"shapes {x.shape} and {y.shape}",
        )
    labels = np.unique(np.concatenate([x, y]))
    p_o = float(np.mean(x == y))
    p_e = float(sum(np.mean(x == c) * np.mean(y == c) for c in labels))
    return (p_o - p_e) / (1.0 - p_e) if p_e < 1.0 else float("nan")


def judge_agreement(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Agreement rate and Cohen's kappa of every pair of judges on their shared comparisons.

    Shape:
        outcomes: ``study, judge, model_a, model_b, outcome``. Output: one row per ordered pair of
        judges (diagonal included, so ``pivot(index="judge_a", columns="judge_b")`` is the full
        matrix): ``judge_a, judge_b, n, agreement, kappa``.
    """
    keys = ["study", "model_a", "model_b"]
    wide = outcomes.pivot_table(index=keys, columns="judge", values="outcome", aggfunc="first")
    rows = []
    for ja in wide.columns:
        for jb in wide.columns:
            both = wide[[ja, jb]].dropna() if ja != jb else wide[[ja]].dropna()
            x = both[ja].to_numpy()
            yv = both[jb].to_numpy() if ja != jb else x
            n = len(x)
            rows.append(
                {
                    "judge_a": ja,
                    "judge_b": jb,
                    "n": n,
                    "agreement": float(np.mean(x == yv)) if n else float("nan"),
                    "kappa": cohen_kappa(x, yv) if n else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=["judge_a", "judge_b", "n", "agreement", "kappa"])


# ---------------------------------------------------------------------------------------------
# results


def _markdown_table(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    def cell(v: Any) -> str:
        if v is pd.NA:
            return "—"
        if isinstance(v, float | np.floating):
            return "—" if np.isnan(v) else floats.format(v)
        return str(v).replace("|", "\\|")

    lines = [
        "| " + " | ".join(map(str, df.columns)) + " |",
        "|" + "---|" * len(df.columns),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


@dataclass(frozen=True)
class ArenaResult:
    """Everything a Report Arena run produced."""

    votes: pd.DataFrame
    """One row per judge call: ``study, judge, model_a, model_b, order`` (``BA``: ``model_b`` was
    shown first), the raw positional ``verdict``, ``rationale``, and ``score_a`` (its meaning for
    ``model_a``: 1, 0 or 0.5)."""
    outcomes: pd.DataFrame
    """One row per (study, judge, pair): ``outcome`` of ``model_a`` in {1, 0, 0.5} after both
    orders were reconciled, and whether they were ``consistent``."""
    leaderboard: pd.DataFrame
    """:func:`bradley_terry` over all judges' outcomes, best first (plus ``elo:<judge>`` per judge
    when there are several)."""
    agreement: pd.DataFrame
    """:func:`judge_agreement`: ``judge_a, judge_b, n, agreement, kappa``."""

    def consistency(self) -> pd.Series:
        """Per judge, the share of pairs whose two orders agreed (1 - position-bias ties)."""
        return self.outcomes.groupby("judge")["consistent"].mean()

    def to_markdown(self) -> str:
        """The leaderboard, the judges' order consistency and their agreement, as Markdown."""
        board = self.leaderboard.copy()
        board["95% CI"] = [
            "—" if np.isnan(lo) else f"{lo:.0f} – {hi:.0f}"
            for lo, hi in zip(board["ci_low"], board["ci_high"], strict=True)
        ]
        cols = ["rank", "model", "elo", "95% CI", "strength", "wins", "losses", "ties"]
        cols += [c for c in board.columns if c.startswith("elo:")]
        board = board[cols]
        for c in [c for c in cols if c.startswith("elo")]:
            board[c] = board[c].round().astype("Int64")
        cons = self.consistency().rename("consistent across orders").reset_index()
        agree = self.agreement[self.agreement["judge_a"] < self.agreement["judge_b"]]
        parts = [
            "## Report Arena leaderboard",
            "",
            f"{self.outcomes['study'].nunique()} studies, {len(self.outcomes)} judged pairs, "
            f"{len(self.votes)} judge calls (both orders).",
            "",
            _markdown_table(board, "{:.3f}"),
            "",
            "### Judges",
            "",
            _markdown_table(cons),
        ]
        if len(agree):
            parts += ["", "### Agreement between judges", "", _markdown_table(agree)]
        return "\n".join(parts) + "\n"

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``votes`` and ``outcomes`` (Parquet), ``leaderboard.csv``, ``agreement.csv``,
        ``leaderboard.md`` and ``leaderboard.png`` into ``folder``, each atomically."""
        from clinfuse.core.runs import atomic_path, atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, df in (("votes", self.votes), ("outcomes", self.outcomes)):
            with atomic_path(folder / f"{name}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
            paths.append(folder / f"{name}.parquet")
        for name, df in (("leaderboard", self.leaderboard), ("agreement", self.agreement)):
            paths.append(atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False)))
        paths.append(atomic_write_text(folder / "leaderboard.md", self.to_markdown()))
        paths.append(plot_leaderboard(self.leaderboard, folder / "leaderboard.png"))
        return paths


def plot_leaderboard(leaderboard: pd.DataFrame, path: str | Path) -> Path:
    """A horizontal Elo plot with bootstrap intervals, best model on top, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from clinfuse.core.runs import atomic_path

    missing = [c for c in ("model", "elo", "ci_low", "ci_high") if c not in leaderboard.columns]
    if missing:
        raise DataError(
            "not a leaderboard",
            expected="columns model, elo, ci_low, ci_high (bradley_terry's output)",
            found=f"missing {', '.join(missing)}",
        )
    board = leaderboard.sort_values("elo")
    elo = board["elo"].to_numpy(float)
    # an estimate can fall outside its percentile interval (a model that never loses): clip
    low = np.clip(np.nan_to_num(elo - board["ci_low"].to_numpy(float), nan=0.0), 0.0, None)
    high = np.clip(np.nan_to_num(board["ci_high"].to_numpy(float) - elo, nan=0.0), 0.0, None)
    fig = Figure(figsize=(6.0, 1.0 + 0.4 * len(board)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(elo, np.arange(len(board)), xerr=[low, high], fmt="o", capsize=3)
    ax.set_yticks(np.arange(len(board)), board["model"].astype(str))
    ax.set_xlabel("Elo (Bradley-Terry), 95% bootstrap interval")
    ax.set_title("Report Arena")
    ax.grid(axis="x", alpha=0.3)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
