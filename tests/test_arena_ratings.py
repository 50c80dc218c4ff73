"""Arena ratings: Bradley-Terry MLE against an independent fit, recovery and bootstrap coverage on
synthetic battles, ties, style control with a planted length bias, online Elo, leaderboard, plot;
intervals that contain their estimate, bootstrap rounds that miss a model left out for it, and a
plot that never fails on a valid board."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from nanoseek.arena import ratings
from nanoseek.arena.ratings import (
    STYLE_ELEMENTS,
    battle_arrays,
    bootstrap_bradley_terry,
    compute_leaderboard,
    compute_ranks,
    conversation_style,
    fit_bradley_terry,
    online_elo,
    style_counts,
)

LOG10 = math.log(10.0)


def simulate(
    true: np.ndarray,
    num: int,
    seed: int,
    tie_prob: float = 0.0,
    verbosity: np.ndarray | None = None,
    length_beta: float = 0.0,
) -> list[dict]:
    """Battles between random pairs; P(a wins) = sigmoid((R_a - R_b) ln10/400 + beta * z_len).

    With `verbosity` every answer gets style counts (length ~ verbosity[model] * lognormal noise,
    markdown counts ~ Poisson independent of everything), and the judge adds `length_beta` times the
    z-scored length feature (a-b)/(a+b+1)."""
    rng = np.random.default_rng(seed)
    p = len(true)
    a = rng.integers(0, p, num)
    b = (a + rng.integers(1, p, num)) % p  # uniform over the other models
    logit = (true[a] - true[b]) * LOG10 / 400.0
    styles = None
    if verbosity is not None:
        length_a = np.round(verbosity[a] * rng.lognormal(0.0, 0.3, num))
        length_b = np.round(verbosity[b] * rng.lognormal(0.0, 0.3, num))
        raw = (length_a - length_b) / (length_a + length_b + 1.0)
        logit = logit + length_beta * (raw - raw.mean()) / raw.std()
        other = rng.poisson(2.0, size=(num, 2, 3))  # headers, lists, bold for a and b
        styles = [
            (
                {"length": int(length_a[i]), **dict(zip(STYLE_ELEMENTS[1:], map(int, other[i, 0])))},
                {"length": int(length_b[i]), **dict(zip(STYLE_ELEMENTS[1:], map(int, other[i, 1])))},
            )
            for i in range(num)
        ]
    u = rng.random(num)
    tie = rng.random(num) < tie_prob
    a_wins = u < 1.0 / (1.0 + np.exp(-logit))
    battles = []
    for i in range(num):
        winner = ("tie" if i % 2 else "tie (bothbad)") if tie[i] else ("model_a" if a_wins[i] else "model_b")
        battle = {"model_a": f"m{a[i]}", "model_b": f"m{b[i]}", "winner": winner}
        if styles is not None:
            battle["style_a"], battle["style_b"] = styles[i]
        battles.append(battle)
    return battles


def independent_fit(battles: list[dict], style: bool) -> tuple[np.ndarray, np.ndarray]:
    """FastChat-style reference: every battle duplicated, a tie becomes one win each way, plain
    (unweighted) logistic regression by torch L-BFGS with model m0 pinned at 0 instead of an L2
    penalty. Returns (ratings of m0..m{p-1} with mean 1000, style coefficients)."""
    p = 1 + max(int(x[f"model_{s}"][1:]) for x in battles for s in "ab")
    a = np.array([int(x["model_a"][1:]) for x in battles])
    b = np.array([int(x["model_b"][1:]) for x in battles])
    y = np.array([{"model_a": 1.0, "model_b": 0.0}.get(x["winner"], 0.5) for x in battles])
    X = np.zeros((len(battles), p))
    X[np.arange(len(battles)), a] += 1.0
    X[np.arange(len(battles)), b] -= 1.0
    if style:
        ca = np.array([[x["style_a"][k] for k in STYLE_ELEMENTS] for x in battles], dtype=float)
        cb = np.array([[x["style_b"][k] for k in STYLE_ELEMENTS] for x in battles], dtype=float)
        raw = (ca - cb) / (ca + cb + 1.0)
        X = np.hstack([X, (raw - raw.mean(0)) / raw.std(0)])
    X = np.vstack([X, X])[:, 1:]  # duplicate rows; drop m0's column (pinned at 0)
    tie = y == 0.5
    Y = np.concatenate([np.where(tie, 1.0, y), np.where(tie, 0.0, y)])
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=1000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Xt @ w, Yt)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    theta = np.concatenate([[0.0], w.detach().numpy()])
    ratings = theta[:p] * 400.0 / LOG10
    return ratings - ratings.mean() + 1000.0, theta[p:]


TRUE = np.array([1180.0, 1120.0, 1060.0, 1010.0, 990.0, 940.0, 900.0, 800.0])
TRUE = TRUE - TRUE.mean() + 1000.0


@pytest.mark.parametrize("style", [False, True])
def test_matches_independent_logistic_regression(style: bool) -> None:
    verbosity = np.array([200.0, 300, 150, 250, 400, 200, 100, 500]) if style else None
    battles = simulate(TRUE, 1500, seed=1, tie_prob=0.2, verbosity=verbosity, length_beta=0.5)
    fit = fit_bradley_terry(battles, style_control=style)
    ref_ratings, ref_coef = independent_fit(battles, style)
    ours = np.array([fit.as_dict()[f"m{i}"] for i in range(len(TRUE))])
    assert np.abs(ours - ref_ratings).max() < 1.0, (ours, ref_ratings)
    assert abs(ours.mean() - 1000.0) < 1e-9
    if style:
        assert np.abs(fit.style_coef - ref_coef).max() < 1e-3, (fit.style_coef, ref_coef)


def test_ties_count_half_a_win_each() -> None:
    # One win and one tie for x over y: score 3/4, so R_x - R_y = 400 log10(3).
    for tie in ("tie", "tie (bothbad)"):
        fit = fit_bradley_terry([("x", "y", "model_a"), ("y", "x", tie)]).as_dict()
        assert fit["x"] - fit["y"] == pytest.approx(400 * math.log10(3), abs=0.01)
        assert fit["x"] + fit["y"] == pytest.approx(2000.0)
    anchored = fit_bradley_terry([("x", "y", "model_a"), ("y", "x", "tie")], anchor=("y", 1200.0)).as_dict()
    assert anchored["y"] == 1200.0 and anchored["x"] == pytest.approx(1200.0 + 400 * math.log10(3), abs=0.01)


def test_recovers_strengths_and_bootstrap_covers() -> None:
    covered, total = 0, 0
    for seed in range(4):
        battles = simulate(TRUE, 3000, seed=100 + seed)
        board = compute_leaderboard(battles, num_bootstrap=100, seed=seed)
        for i, true in enumerate(TRUE):
            row = board.row(f"m{i}")
            assert abs(row.rating - true) < 60.0, (seed, i, row.rating, true)
            assert row.ci_low < row.rating < row.ci_high
            covered += row.ci_low <= true <= row.ci_high
            total += 1
        assert board.row("m0").rank == 1 and board.row("m7").rank >= 6
    assert 0.8 <= covered / total <= 1.0, covered / total


def test_bootstrap_is_seeded_and_deterministic() -> None:
    battles = simulate(TRUE, 500, seed=7, tie_prob=0.1)
    one = bootstrap_bradley_terry(battles, num_rounds=20, seed=3)
    two = bootstrap_bradley_terry(battles, num_rounds=20, seed=3, max_chunk_elements=1000)  # other chunking
    three = bootstrap_bradley_terry(battles, num_rounds=20, seed=4)
    assert one.ratings.shape == (20, 8)
    np.testing.assert_allclose(one.ratings, two.ratings, atol=1e-6)
    assert not np.allclose(one.ratings, three.ratings)


def test_style_control_removes_planted_length_bias() -> None:
    # m7 is the weakest model but by far the most verbose, and the judge likes long answers.
    verbosity = np.array([200.0, 220, 180, 200, 240, 160, 200, 1000])
    battles = simulate(TRUE, 4000, seed=11, verbosity=verbosity, length_beta=1.0)
    plain = compute_leaderboard(battles, num_bootstrap=30, seed=0)
    styled = compute_leaderboard(battles, style_control=True, num_bootstrap=30, seed=0)
    plain_order = [r.model for r in plain.rows]
    styled_order = [r.model for r in styled.rows]
    assert plain_order.index("m7") <= 2, plain_order  # verbosity buys a top-3 place
    assert styled_order[-1] == "m7", styled_order  # back at the bottom where it belongs
    assert abs(styled.row("m7").rating - TRUE[7]) < 60.0
    assert plain.row("m7").rating - TRUE[7] > 200.0
    coef = {s.name: s for s in styled.style}
    assert 0.8 < coef["length"].coef < 1.2 and coef["length"].ci_low > 0.5
    for name in ("headers", "lists", "bold"):
        assert abs(coef[name].coef) < 0.15, (name, coef[name])
    assert "length" in styled.to_markdown() and "style-controlled" in styled.to_text()


def test_style_counts_from_texts() -> None:
    text = (
        "# Title\n\nSome **bold** intro and __more__.\n\n## Steps\n1. first\n2. second\n- third\n"
        "```python\n# not a header\n- not a list\n```\nnotice # inline hash is no header"
    )
    counts = style_counts(text)
    assert counts["headers"] == 2 and counts["lists"] == 3 and counts["bold"] == 2
    assert counts["length"] > 20
    # Only assistant turns count, summed over the conversation.
    chat = [
        {"role": "user", "content": "# ignored **user** text\n- not counted"},
        {"role": "assistant", "content": "## A\n- x"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "**b** and - inline dash"},
    ]
    # length counts words and punctuation marks: "## A", "- x" -> 3 + 2; "**b** and - inline dash" -> 9
    assert conversation_style(chat) == {"length": 14, "headers": 1, "lists": 1, "bold": 1}
    short = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ok"}]
    from_text = [
        {
            "model_a": "x",
            "model_b": "y",
            "winner": "model_a",
            "conversation_a": chat,
            "conversation_b": short,
        },
        {
            "model_a": "y",
            "model_b": "x",
            "winner": "tie",
            "conversation_a": short,
            "conversation_b": chat[:2],
        },
    ]
    from_counts = [
        {
            **b,
            "style_a": conversation_style(b["conversation_a"]),
            "style_b": conversation_style(b["conversation_b"]),
        }
        for b in from_text
    ]
    np.testing.assert_allclose(
        battle_arrays(from_text, style_control=True).style,
        battle_arrays(from_counts, style_control=True).style,
    )
    with pytest.raises(ValueError, match="battle 0: style control needs"):
        battle_arrays([("x", "y", "tie")], style_control=True)


def test_online_elo_and_leaderboard_table(tmp_path) -> None:
    battles = [("a", "b", "model_a"), ("b", "c", "tie"), ("c", "a", "model_b"), ("a", "c", "tie (bothbad)")]
    elo = online_elo(battles)
    assert elo["a"] > 1000 > elo["c"]
    assert online_elo([("a", "b", "model_a")]) == {"a": 1002.0, "b": 998.0}
    assert sum(elo.values()) == pytest.approx(3000.0)  # zero-sum updates
    board = compute_leaderboard(battles, num_bootstrap=10)
    a = board.row("a")
    assert (a.wins, a.ties, a.losses, a.num_battles) == (2, 1, 0, 3)
    assert (board.row("c").wins, board.row("c").ties, board.row("c").losses) == (0, 2, 1)
    assert a.elo == pytest.approx(elo["a"])
    md = board.to_markdown().splitlines()
    assert (
        md[0].startswith("| Rank | Model | Rating | 95% CI |")
        and len([x for x in md if x.startswith("| ")]) == 4
    )
    assert "a" in board.to_text() and str(board) == board.to_text()
    assert json.loads(json.dumps(board.as_dict()))["rows"][0]["model"] == board.rows[0].model
    from nanoseek.arena.plot import plot_leaderboard

    png = plot_leaderboard(board, tmp_path / "board.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranks_from_intervals() -> None:
    lo, hi = np.array([10.0, 5.0, 0.0, -20.0]), np.array([20.0, 15.0, 8.0, -10.0])
    # model 2's upper bound 8 < model 0's lower bound 10; model 3 is below everyone.
    assert compute_ranks(lo, hi).tolist() == [1, 1, 2, 4]


def test_bad_battles_are_named() -> None:
    with pytest.raises(ValueError, match="battle 1: winner"):
        fit_bradley_terry([("a", "b", "model_a"), ("a", "b", "draw")])
    with pytest.raises(ValueError, match="battle 0: model_a and model_b are the same"):
        fit_bradley_terry([("a", "a", "tie")])


# ----------------------------------------------------------------------------- intervals (issue 15)


def test_the_interval_contains_the_estimate_by_construction(monkeypatch) -> None:
    # Every bootstrap round lands a hair above the point estimate (what float rounding did to a
    # one-vote board: ci_low 2044.2107097901444 > rating 2044.210709789183): the reported interval
    # is widened to contain the rating, whatever the rounding.
    battles = [("x", "y", "model_a"), ("y", "z", "tie"), ("x", "z", "model_a")]
    fit = ratings.fit_bradley_terry(battles)
    above = ratings.BootstrapResult(fit.models, np.tile(fit.ratings + 1e-9, (10, 1)))
    below = ratings.BootstrapResult(fit.models, np.tile(fit.ratings - 1e-9, (10, 1)))
    for crafted in (above, below):
        with monkeypatch.context() as patch:
            patch.setattr(ratings, "bootstrap_bradley_terry", lambda *a, b=crafted, **k: b)
            for row in ratings.compute_leaderboard(battles, num_bootstrap=10).rows:
                assert row.ci_low <= row.rating <= row.ci_high, row
    # and on real one-vote boards (every round refits the same battle)
    for winner in ("model_a", "model_b", "tie"):
        for row in ratings.compute_leaderboard([("m", "n", winner)], num_bootstrap=20).rows:
            assert row.ci_low <= row.rating <= row.ci_high, row


def test_the_plot_never_fails_on_a_valid_board(tmp_path) -> None:
    from nanoseek.arena.plot import plot_leaderboard

    board = compute_leaderboard([("x", "y", "model_a"), ("y", "x", "tie")], num_bootstrap=10)
    # a hand-built (or JSON round-tripped) row whose bound is a hair inside the rating
    hair = dataclasses.replace(board.rows[0], rating=2044.210709789183, ci_low=2044.2107097901444)
    crafted = dataclasses.replace(board, rows=[hair, dataclasses.replace(board.rows[1], ci_high=-1e9)])
    assert plot_leaderboard(crafted, tmp_path / "hair.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unknown = dataclasses.replace(board.rows[1], ci_low=None, ci_high=None)  # no round saw it
    crafted = dataclasses.replace(board, rows=[board.rows[0], unknown])
    assert plot_leaderboard(crafted, tmp_path / "none.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def single_battle_board() -> list[tuple[str, str, str]]:
    """strong > mid > weak over 120 battles, and `rookie` with one battle: a tie with strong."""
    battles = []
    for winner, loser, wins, losses in (
        ("strong", "mid", 30, 10),
        ("mid", "weak", 30, 10),
        ("strong", "weak", 35, 5),
    ):
        battles += [(winner, loser, "model_a")] * wins + [(winner, loser, "model_b")] * losses
    return [*battles, ("rookie", "strong", "tie")]


def test_bootstrap_rounds_that_miss_a_model_are_left_out_for_it() -> None:
    battles = single_battle_board()
    boot = bootstrap_bradley_terry(battles, num_rounds=200, seed=0)
    rookie, strong = boot.models.index("rookie"), boot.models.index("strong")
    missed = np.isnan(boot.ratings[:, rookie])  # the rounds whose resample lacks rookie's one battle
    assert 40 < missed.sum() < 110  # about 1/e of them
    # every round that saw rookie saw only ties with strong: it puts rookie at strong's level there
    np.testing.assert_allclose(boot.ratings[~missed, rookie], boot.ratings[~missed, strong], atol=0.5)
    assert not np.isnan(np.delete(boot.ratings, rookie, axis=1)).any()  # the others played in every round
    assert boot.rounds()[rookie] == (~missed).sum() and boot.rounds()[strong] == 200

    board = compute_leaderboard(battles, num_bootstrap=100, seed=0)
    r, s = board.row("rookie"), board.row("strong")
    # a tie with strong puts rookie at strong's level (~1135) in every round that saw it: its
    # interval is not dragged down to the anchor (1000) by the rounds that never saw it, and both
    # are surely above mid (whose interval tops out near 1045), as they were before rookie came
    assert r.ci_low > 1050 and s.ci_low > 1050, (r, s)
    assert r.ci_low <= r.rating <= r.ci_high and r.rank == s.rank == 1
    assert (board.row("mid").rank, board.row("weak").rank) == (3, 4)
    assert (r.num_battles, s.num_battles) == (1, 81) and s.ci_rounds == 100 and 45 < r.ci_rounds < 85
    row = {x["model"]: x for x in json.loads(json.dumps(board.as_dict(), allow_nan=False))["rows"]}
    assert row["rookie"]["num_battles"] == 1 and row["rookie"]["ci_rounds"] == r.ci_rounds
    header = board.to_text().splitlines()[0].split()
    assert header[header.index("CI") + 1] == "Battles"  # the battles next to the interval
    assert board.to_markdown().startswith("| Rank | Model | Rating | 95% CI | Battles |")


def test_an_anchor_model_missing_from_a_round_drops_the_round() -> None:
    battles = single_battle_board()
    board = compute_leaderboard(battles, num_bootstrap=100, seed=0, anchor=("rookie", 1000.0))
    rounds = {r.model: r.ci_rounds for r in board.rows}
    assert len(set(rounds.values())) == 1 and 45 < rounds["rookie"] < 85  # only the rounds with rookie
    assert board.row("rookie").ci_low == board.row("rookie").ci_high == 1000.0


def test_a_model_no_round_saw_has_no_interval(tmp_path) -> None:
    battles = single_battle_board()
    seed = next(
        s for s in range(100) if bootstrap_bradley_terry(battles, num_rounds=1, seed=s).rounds()[1] == 0
    )
    board = compute_leaderboard(battles, num_bootstrap=1, seed=seed)
    rookie = board.row("rookie")
    assert rookie.ci_low is None and rookie.ci_high is None and rookie.ci_rounds == 0
    assert rookie.rank == 1  # unbounded: nobody is surely above it
    assert "n/a" in board.to_text() and json.dumps(board.as_dict(), allow_nan=False)
    from nanoseek.arena.plot import plot_leaderboard

    assert plot_leaderboard(board, tmp_path / "board.png").exists()
