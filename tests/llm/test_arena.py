"""llm.arena: Bradley-Terry against planted strengths and two oracles, order reconciliation,
judge agreement, the LLM judge's parsing and cache, bad input, and the saved files."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.llm import CallableBackend, Message
from clinfuse.llm.arena import (
    UNPARSED,
    ArenaResult,
    LLMPairJudge,
    PairJudge,
    ScoreJudge,
    bradley_terry,
    cohen_kappa,
    judge_agreement,
    make_judge,
    parse_pair_verdict,
    run_arena,
    token_f1,
)

# ---------------------------------------------------------------------------------------------
# helpers


def synthetic_outcomes(
    theta: dict[str, float], n_studies: int, seed: int, tie_rate: float = 0.0
) -> pd.DataFrame:
    """All pairs per study; model_a wins with probability sigmoid(theta_a - theta_b)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        for a, b in itertools.combinations(sorted(theta), 2):
            p = 1.0 / (1.0 + math.exp(-(theta[a] - theta[b])))
            y = 0.5 if rng.random() < tie_rate else float(rng.random() < p)
            rows.append({"study": s, "model_a": a, "model_b": b, "outcome": y})
    return pd.DataFrame(rows)


def mm_oracle(outcomes: pd.DataFrame, iters: int = 20_000) -> dict[str, float]:
    """Zermelo / Hunter (2004) MM iteration for the BT MLE, ties as half wins; centred log."""
    models = sorted(set(outcomes.model_a) | set(outcomes.model_b))
    idx = {m: i for i, m in enumerate(models)}
    k = len(models)
    w = np.zeros((k, k))  # w[i, j]: (fractional) wins of i over j
    for a, b, y in zip(outcomes.model_a, outcomes.model_b, outcomes.outcome, strict=True):
        w[idx[a], idx[b]] += y
        w[idx[b], idx[a]] += 1 - y
    n = w + w.T
    p = np.ones(k)
    for _ in range(iters):
        new = w.sum(1) / (n / (p[:, None] + p[None, :])).sum(1)
        new /= np.exp(np.log(new).mean())
        if np.abs(new - p).max() < 1e-13:
            break
        p = new
    lp = np.log(p)
    return dict(zip(models, lp - lp.mean(), strict=True))


def strengths(board: pd.DataFrame) -> dict[str, float]:
    return dict(zip(board.model, board.strength, strict=True))


FINDINGS = ["left effusion", "right pneumothorax", "mild cardiomegaly", "bibasal atelectasis"]


def make_reports(n_studies: int = 8) -> pd.DataFrame:
    """Four models of planted quality: `full` copies the reference, `half` keeps its first word,
    `wrong` names another finding, `empty` says nothing."""
    rows = []
    for s in range(n_studies):
        ref = f"There is {FINDINGS[s % 4]}."
        other = FINDINGS[(s + 1) % 4]
        for model, text in {
            "full": ref,
            "half": f"There is {FINDINGS[s % 4].split()[0]}.",
            "wrong": f"There is {other}.",
            "empty": "",
        }.items():
            rows.append({"study": f"s{s}", "model": model, "report": text, "reference": ref})
    return pd.DataFrame(rows)


class PositionBiased:
    """Honest when the score gap is over `gap`, else says "A" (whichever report is shown first)."""

    def __init__(self, gap: float, judge_id: str = "biased") -> None:
        self.gap, self.judge_id = gap, judge_id

    def compare(self, reference: str, report_a: str, report_b: str) -> tuple[str, str]:
        sa, sb = token_f1(reference, report_a), token_f1(reference, report_b)
        if abs(sa - sb) <= self.gap:
            return "A", "first one"
        return ("A" if sa > sb else "B"), "honest"


def fake_llm(style: str, calls: list[int]) -> CallableBackend:
    """A judge 'model' that prefers the report with the higher token F1; answers in `style`."""

    def fn(messages: list[Message]) -> str:
        calls.append(1)
        text = messages[-1].text
        ref = text.split("REFERENCE:\n")[1].split("\n\nREPORT A:\n")[0]
        a = text.split("REPORT A:\n")[1].split("\n\nREPORT B:\n")[0]
        b = text.split("REPORT B:\n")[1]
        sa, sb = token_f1(ref, a), token_f1(ref, b)
        winner = "A" if sa > sb else "B" if sb > sa else "tie"
        obj = json.dumps({"winner": winner, "rationale": f"F1 {sa:.2f} vs {sb:.2f}"})
        return {
            "json": obj,
            "fenced": f"Let me compare.\n```json\n{obj}\n```\nHope this helps.",
            "garbage": "Both are fine I guess",
        }[style]

    return CallableBackend(fn, model_id=f"fake-judge-{style}-v1")


# ---------------------------------------------------------------------------------------------
# Bradley-Terry


def test_bt_recovers_planted_strengths() -> None:
    planted = dict(zip("abcdef", np.linspace(-1.5, 1.5, 6), strict=True))
    out = synthetic_outcomes(planted, n_studies=300, seed=1)
    board = bradley_terry(out, n_boot=100, seed=0)
    fitted = strengths(board)
    rho = pd.Series(fitted).corr(pd.Series(planted), method="spearman")
    assert rho >= 0.9
    err = max(abs(fitted[m] - planted[m]) for m in planted)
    assert err < 0.15, err
    assert list(board.model) == list("fedcba") and list(board["rank"]) == [1, 2, 3, 4, 5, 6]
    # Elo: base + 400 log10(e) strength; the 95% intervals contain the planted Elo for most models
    elo_planted = {m: 1000 + 400 * math.log10(math.e) * t for m, t in planted.items()}
    np.testing.assert_allclose(board.elo, 1000 + 400 * math.log10(math.e) * board.strength)
    cis = board[["model", "ci_low", "ci_high"]].itertuples(index=False)
    covered = sum(lo <= elo_planted[m] <= hi for m, lo, hi in cis)
    assert covered >= 5
    assert (board.ci_low < board.elo).all() and (board.elo < board.ci_high).all()


def test_bt_recovers_planted_order_with_ties_and_few_votes() -> None:
    planted = {"m1": -1.0, "m2": -0.3, "m3": 0.3, "m4": 1.0}
    out = synthetic_outcomes(planted, n_studies=60, seed=3, tie_rate=0.2)
    fitted = strengths(bradley_terry(out, n_boot=0))
    rho = pd.Series(fitted).corr(pd.Series(planted), method="spearman")
    assert rho >= 0.9


def test_bt_matches_mm_oracle_and_unpenalised_sklearn() -> None:
    planted = {"p": 0.8, "q": 0.1, "r": -0.2, "s": -0.7, "t": 0.0}
    out = synthetic_outcomes(planted, n_studies=40, seed=7, tie_rate=0.25)
    fitted = strengths(bradley_terry(out, n_boot=0))
    mm = mm_oracle(out)
    for m in planted:
        assert abs(fitted[m] - mm[m]) < 1e-3, (m, fitted[m], mm[m])

    from sklearn.linear_model import LogisticRegression

    models = sorted(planted)
    x = np.zeros((len(out), len(models)))
    x[np.arange(len(out)), [models.index(m) for m in out.model_a]] = 1.0
    x[np.arange(len(out)), [models.index(m) for m in out.model_b]] = -1.0
    y = out.outcome.to_numpy()
    # a tie becomes two half-weighted rows: a win and a loss
    xx, yy = np.vstack([x, x]), np.r_[np.ones(len(y)), np.zeros(len(y))]
    ww = np.r_[y, 1.0 - y]
    keep = ww > 0
    lr = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=10_000)
    coef = lr.fit(xx[keep], yy[keep], sample_weight=ww[keep]).coef_[0]
    coef -= coef.mean()
    for i, m in enumerate(models):
        assert abs(fitted[m] - coef[i]) < 1e-3, (m, fitted[m], coef[i])


def test_ties_are_half_wins_closed_form() -> None:
    # x: one win and one tie against y -> 1.5 wins vs 0.5, so theta_x - theta_y = log 3
    out = pd.DataFrame(
        {"study": [0, 1], "model_a": ["x", "y"], "model_b": ["y", "x"], "outcome": [1.0, 0.5]}
    )
    board = bradley_terry(out, n_boot=0).set_index("model")
    assert board.strength["x"] - board.strength["y"] == pytest.approx(math.log(3), abs=1e-5)
    assert (board.wins["x"], board.ties["x"], board.losses["x"]) == (1, 1, 0)
    assert (board.wins["y"], board.ties["y"], board.losses["y"]) == (0, 1, 1)
    # two ties weigh exactly as one win each way
    ties = pd.DataFrame({"study": [0, 1], "model_a": ["x"] * 2, "model_b": ["y"] * 2,
                         "outcome": [0.5, 0.5]})  # fmt: skip
    split = ties.assign(outcome=[1.0, 0.0])
    np.testing.assert_allclose(
        bradley_terry(ties, n_boot=0).strength, bradley_terry(split, n_boot=0).strength, atol=1e-9
    )


def test_elo_scale_anchor_and_ten_to_one_odds() -> None:
    # 10 wins to 1: strength gap log 10, i.e. exactly `elo_scale` Elo points
    out = pd.DataFrame({"study": range(11), "model_a": ["x"] * 11, "model_b": ["y"] * 11,
                        "outcome": [1.0] * 10 + [0.0]})  # fmt: skip
    board = bradley_terry(out, n_boot=0, anchor="y", elo_base=1500.0).set_index("model")
    assert board.elo["y"] == pytest.approx(1500.0, abs=1e-9)
    assert board.elo["x"] - board.elo["y"] == pytest.approx(400.0, abs=1e-3)
    assert np.isnan(board.ci_low).all()
    with pytest.raises(DataError, match="anchor"):
        bradley_terry(out, n_boot=0, anchor="z")


def test_separation_is_finite_and_l2_shrinks_it(caplog) -> None:
    # x always beats y beats z: no finite MLE; the tiny ridge keeps it finite, a larger one shrinks
    out = pd.DataFrame({"study": range(6), "model_a": ["x", "y", "x"] * 2,
                        "model_b": ["y", "z", "z"] * 2, "outcome": [1.0] * 6})  # fmt: skip
    tiny = bradley_terry(out, n_boot=0).set_index("model").strength
    assert "never lost or never won" in caplog.text
    ridge = bradley_terry(out, n_boot=0, l2=0.5).set_index("model").strength
    assert np.isfinite(tiny).all() and tiny["x"] > tiny["y"] > tiny["z"]
    assert ridge["x"] > ridge["y"] > ridge["z"] and tiny["x"] - tiny["z"] > 5 * (
        ridge["x"] - ridge["z"]
    )
    # the ridge optimum: gradient (wins - n p) - l2 theta = 0 for every model
    th = ridge.to_dict()
    grad = {m: -0.5 * th[m] for m in th}
    for a, b in (("x", "y"), ("y", "z"), ("x", "z")):
        r = 2.0 * (1.0 - 1.0 / (1.0 + math.exp(-(th[a] - th[b]))))
        grad[a] += r
        grad[b] -= r
    assert max(abs(g) for g in grad.values()) < 1e-8
    with pytest.raises(ConfigError, match="l2"):
        bradley_terry(out, l2=0.0)


def test_bt_bad_input() -> None:
    with pytest.raises(DataError) as e:
        bradley_terry(pd.DataFrame({"model_a": ["x"], "model_b": ["y"]}))
    assert e.value.expected and e.value.found and e.value.fix
    bad = pd.DataFrame({"study": [0], "model_a": ["x"], "model_b": ["y"], "outcome": [2.0]})
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        bradley_terry(bad)


# ---------------------------------------------------------------------------------------------
# the tournament


def test_arena_ranks_planted_quality_and_both_orders_agree() -> None:
    reports = make_reports(8)
    res = run_arena(reports, [ScoreJudge(token_f1)], n_boot=50, seed=0)
    assert isinstance(res, ArenaResult)
    assert list(res.leaderboard.model) == ["full", "half", "wrong", "empty"]
    # 8 studies x 6 pairs x 1 judge x 2 orders
    assert len(res.votes) == 96 and len(res.outcomes) == 48
    assert set(res.votes.order) == {"AB", "BA"}
    assert res.outcomes.consistent.all()
    # `wrong` vs `half`: "there is" overlaps both ways, F1 decides; `full` always beats `empty`
    full_empty = res.outcomes[(res.outcomes.model_a == "empty") & (res.outcomes.model_b == "full")]
    assert (full_empty.outcome == 0.0).all()


def test_reconciliation_with_a_position_biased_judge() -> None:
    reports = make_reports(4)
    res = run_arena(reports, [PositionBiased(gap=0.3)], n_boot=0)
    votes = res.votes.set_index(["study", "model_a", "model_b", "order"])
    for row in res.outcomes.itertuples(index=False):
        ab = votes.loc[(row.study, row.model_a, row.model_b, "AB"), "verdict"]
        ba = votes.loc[(row.study, row.model_a, row.model_b, "BA"), "verdict"]
        ref = reports[reports.study == row.study].reference.iloc[0]
        text = reports[reports.study == row.study].set_index("model").report
        gap = token_f1(ref, text[row.model_a]) - token_f1(ref, text[row.model_b])
        if abs(gap) <= 0.3:  # biased: "A" in both orders -> inconsistent -> tie
            assert (ab, ba, row.outcome, row.consistent) == ("A", "A", 0.5, False)
        else:  # honest: A then B (or B then A) -> a consistent win
            assert row.consistent and row.outcome == (1.0 if gap > 0 else 0.0)
            assert (ab, ba) == (("A", "B") if gap > 0 else ("B", "A"))
    assert 0.0 < res.consistency()["biased"] < 1.0

    class AlwaysA:
        judge_id = "always-a"

        def compare(self, reference: str, report_a: str, report_b: str) -> tuple[str, str]:
            return "A", "first"

    class WinThenTie:  # prefers the longer report when shown first, else calls a tie
        judge_id = "win-then-tie"

        def compare(self, reference: str, report_a: str, report_b: str) -> tuple[str, str]:
            return ("A" if len(report_a) > len(report_b) else "tie"), "length"

    res = run_arena(reports, [WinThenTie()], n_boot=0)
    # a win in one order and a tie in the other is inconsistent: a tie (never 0.75)
    assert set(res.outcomes.outcome) == {0.5} and not res.outcomes.consistent.any()
    assert set(res.votes.verdict) == {"A", "tie"}

    res = run_arena(reports, [AlwaysA()], n_boot=0)
    assert (res.outcomes.outcome == 0.5).all() and not res.outcomes.consistent.any()
    np.testing.assert_allclose(res.leaderboard.strength, 0.0, atol=1e-9)
    assert (res.leaderboard.ties == 12).all()  # 4 studies x 3 opponents


def test_sampled_pairs_per_study_are_distinct_and_seeded() -> None:
    reports = make_reports(6)
    a = run_arena(reports, [ScoreJudge(token_f1)], pairs=2, n_boot=0, seed=5)
    b = run_arena(reports, [ScoreJudge(token_f1)], pairs=2, n_boot=0, seed=5)
    per_study = a.outcomes.groupby("study").size()
    assert (per_study == 2).all()
    assert not a.outcomes.duplicated(["study", "model_a", "model_b"]).any()
    pd.testing.assert_frame_equal(a.outcomes, b.outcomes)
    c = run_arena(reports, [ScoreJudge(token_f1)], pairs=2, n_boot=0, seed=6)
    assert not a.outcomes[["study", "model_a", "model_b"]].equals(
        c.outcomes[["study", "model_a", "model_b"]]
    )


def test_threads_give_the_same_votes() -> None:
    reports = make_reports(5)
    one = run_arena(reports, [ScoreJudge(token_f1)], n_boot=10, workers=1)
    four = run_arena(reports, [ScoreJudge(token_f1)], n_boot=10, workers=4)
    pd.testing.assert_frame_equal(one.votes, four.votes)
    pd.testing.assert_frame_equal(one.leaderboard, four.leaderboard)


# ---------------------------------------------------------------------------------------------
# agreement


def test_cohen_kappa_hand_example_and_sklearn() -> None:
    # Wikipedia's example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4
    x = [1] * 25 + [0] * 25
    y = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(x, y) == pytest.approx(0.4)
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    u, v = rng.choice(["win", "tie", "loss"], 200), rng.choice(["win", "tie", "loss"], 200)
    v[:120] = u[:120]
    assert cohen_kappa(u, v) == pytest.approx(cohen_kappa_score(u, v))
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))


def test_agreement_of_identical_and_of_hand_made_judges() -> None:
    reports = make_reports(6)
    judges = [ScoreJudge(token_f1, judge_id="j1"), ScoreJudge(token_f1, judge_id="j2")]
    res = run_arena(reports, judges, n_boot=0)
    assert (res.agreement.agreement == 1.0).all() and (res.agreement.kappa == 1.0).all()
    assert len(res.agreement) == 4 and (res.agreement.n == 36).all()
    assert {"elo:j1", "elo:j2"} <= set(res.leaderboard.columns)
    np.testing.assert_allclose(res.leaderboard["elo:j1"], res.leaderboard["elo:j2"])

    # hand example: 4 shared comparisons, the judges agree on 3 (2 wins, 1 tie), differ on one
    rows = [("s1", 1.0, 1.0), ("s2", 0.0, 0.0), ("s3", 0.5, 0.5), ("s4", 1.0, 0.0)]
    out = pd.DataFrame(
        [
            {"study": s, "judge": j, "model_a": "x", "model_b": "y", "outcome": o}
            for s, o1, o2 in rows
            for j, o in (("u", o1), ("v", o2))
        ]
    )
    ag = judge_agreement(out).set_index(["judge_a", "judge_b"])
    # p_o = 3/4; u: {1: 1/2, 0: 1/4, .5: 1/4}, v: {1: 1/4, 0: 1/2, .5: 1/4} -> p_e = 5/16
    assert ag.loc[("u", "v"), "agreement"] == 0.75
    assert ag.loc[("u", "v"), "kappa"] == pytest.approx((0.75 - 5 / 16) / (1 - 5 / 16))
    assert ag.loc[("u", "u"), "agreement"] == 1.0


# ---------------------------------------------------------------------------------------------
# the LLM judge


def test_parse_pair_verdict_variants() -> None:
    assert parse_pair_verdict('{"winner": "A", "rationale": "r"}') == ("A", "r")
    assert parse_pair_verdict('noise {"x": 1} then {"Winner": "Report B", "reason": "q"}') == (
        "B",
        "q",
    )
    assert parse_pair_verdict('```\n{"winner": "Tie", "rationale": "same"}\n```')[0] == "tie"
    assert parse_pair_verdict('{"winner": "C"}')[1].startswith(UNPARSED)
    assert parse_pair_verdict("{not json")[0] == "tie"


@pytest.mark.parametrize("style", ["json", "fenced"])
def test_llm_judge_reads_json_and_ranks(style: str) -> None:
    calls: list[int] = []
    judge = LLMPairJudge(fake_llm(style, calls))
    assert isinstance(judge, PairJudge) and judge.judge_id == f"fake-judge-{style}-v1"
    verdict, why = judge.compare("left effusion", "small left effusion", "normal")
    assert verdict == "A" and why.startswith("F1")
    res = run_arena(make_reports(4), [judge], n_boot=0)
    assert list(res.leaderboard.model) == ["full", "half", "wrong", "empty"]
    assert len(calls) == 1 + 4 * 6 * 2 and judge.n_unparsed == 0
    # the judge saw the rubric and the three texts
    msgs = judge.messages("REF", "AAA", "BBB")
    assert "laterality" in msgs[0].text and "hallucination" in msgs[0].text
    assert msgs[1].text == "REFERENCE:\nREF\n\nREPORT A:\nAAA\n\nREPORT B:\nBBB"


def test_llm_judge_garbage_is_a_tie_with_reason() -> None:
    calls: list[int] = []
    judge = LLMPairJudge(fake_llm("garbage", calls))
    verdict, why = judge.compare("left effusion", "left effusion", "normal")
    assert verdict == "tie" and why.startswith(UNPARSED) and "fine I guess" in why
    res = run_arena(make_reports(2), [judge], n_boot=0)
    assert (res.outcomes.outcome == 0.5).all() and judge.n_unparsed == 1 + 2 * 6 * 2


def test_cache_second_run_makes_no_backend_calls(tmp_path) -> None:
    reports = make_reports(3)
    first: list[int] = []
    res1 = run_arena(
        reports, [LLMPairJudge(fake_llm("json", first), cache_dir=tmp_path)], n_boot=20
    )
    assert len(first) == 3 * 6 * 2
    second: list[int] = []
    judge2 = LLMPairJudge(fake_llm("json", second), cache_dir=tmp_path)
    res2 = run_arena(reports, [judge2], n_boot=20)
    assert second == []
    assert judge2.backend.stats["hits"] == 36
    pd.testing.assert_frame_equal(res1.votes, res2.votes)
    pd.testing.assert_frame_equal(res1.leaderboard, res2.leaderboard)
    # another judge model never reads these entries
    third: list[int] = []
    other = fake_llm("fenced", third)
    run_arena(reports, [LLMPairJudge(other, cache_dir=tmp_path)], n_boot=0)
    assert len(third) == 36


def test_make_judge_specs() -> None:
    j = make_judge("local:token-f1", margin=0.1)
    assert isinstance(j, ScoreJudge) and j.judge_id == "local:token-f1" and j.margin == 0.1
    assert isinstance(make_judge("local:echo"), LLMPairJudge)


def test_score_judge_margin() -> None:
    j = ScoreJudge(lambda ref, rep: len(rep), margin=2)
    assert j.compare("", "abcd", "ab")[0] == "tie"
    assert j.compare("", "abcde", "ab")[0] == "A"
    assert j.compare("", "a", "abcd")[0] == "B"


# ---------------------------------------------------------------------------------------------
# bad input and outputs


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda df: df.drop(columns="reference"), "reference"),
        (lambda df: df[~((df.study == "s1") & (df.model != "full"))], "fewer than two models"),
        (lambda df: pd.concat([df, df.head(1)]), "more than one report"),
        (lambda df: df.assign(report=df.report.where(df.model != "half", None)), "no text"),
        (
            lambda df: df.assign(reference=df.reference.where(df.model != "half", "other")),
            "more than one reference",
        ),
    ],
)
def test_bad_reports_raise_data_error(mutate, match: str) -> None:
    with pytest.raises(DataError, match=match) as e:
        run_arena(mutate(make_reports(3)), [ScoreJudge(token_f1)], n_boot=0)
    assert e.value.expected is not None and e.value.found is not None and e.value.fix


def test_bad_judges_and_options() -> None:
    reports = make_reports(2)
    with pytest.raises(DataError, match="at least one judge") as e:
        run_arena(reports, [], n_boot=0)
    assert e.value.expected and e.value.found and e.value.fix
    with pytest.raises(DataError, match="share a judge_id"):
        run_arena(reports, [ScoreJudge(token_f1), ScoreJudge(token_f1)], n_boot=0)
    with pytest.raises(ConfigError, match="pairs"):
        run_arena(reports, [ScoreJudge(token_f1)], pairs=0, n_boot=0)

    class Rude:
        judge_id = "rude"

        def compare(self, reference: str, report_a: str, report_b: str) -> str:
            return "first"

    with pytest.raises(ConfigError, match="bad verdict"):
        run_arena(reports, [Rude()], n_boot=0)


def test_save_writes_tables_markdown_and_plot(tmp_path) -> None:
    judges = [ScoreJudge(token_f1, judge_id="f1"), PositionBiased(0.3)]
    res = run_arena(make_reports(5), judges, n_boot=30)
    paths = res.save(tmp_path / "arena")
    names = {p.name for p in paths}
    assert names == {
        "votes.parquet",
        "outcomes.parquet",
        "leaderboard.csv",
        "agreement.csv",
        "leaderboard.md",
        "leaderboard.png",
    }
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert (tmp_path / "arena" / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "arena" / "votes.parquet"), res.votes)
    md = (tmp_path / "arena" / "leaderboard.md").read_text()
    assert "| 1 | full |" in md and "biased" in md and "Agreement" in md
    assert not list((tmp_path / "arena").glob(".*tmp"))  # no temporary files left behind
