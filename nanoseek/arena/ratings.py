"""Arena ratings: Bradley-Terry MLE, bootstrap intervals, online Elo, style control, leaderboard.

A battle is anything with `model_a`, `model_b` and `winner` (a mapping such as a record read by
`battles_io`, a `store.Battle`, or a `(model_a, model_b, winner)` tuple); `winner` is one of
`"model_a"`, `"model_b"`, `"tie"`, `"tie (bothbad)"`.

    from nanoseek.arena.ratings import compute_leaderboard
    board = compute_leaderboard(battles, style_control=False, num_bootstrap=100, seed=0)
    print(board.to_text())            # or board.to_markdown()

The model (as in Chatbot Arena): P(a beats b) = sigmoid((R_a - R_b) * ln(10) / 400). A tie is half
a win for each side, i.e. the per-battle log-likelihood is
    y * log sigmoid(z) + (1 - y) * log sigmoid(-z),   y = 1 (a wins), 0 (b wins), 1/2 (tie),
which equals FastChat's "duplicate every tie as one win each way at half weight". The fit is a
weighted logistic regression on a design matrix with +1 in model_a's column and -1 in model_b's,
solved by Newton's method (exact up to float precision, deterministic) with a tiny L2 penalty that
makes the otherwise shift-invariant problem identifiable. Ratings are then put on the Elo scale
and anchored: by default the mean rating over models is `base` (1000); with `anchor=(model, value)`
that model is pinned to `value` instead (its bootstrap interval then has zero width). A model that
never lost has an infinite MLE; the L2 penalty keeps it finite but very high.

Bootstrap: resample battles with replacement `num_rounds` times (seeded), refit every round (all
rounds solved together as one batched Newton iteration), take the 2.5 / 97.5 percentiles. A round
whose resample misses a model says nothing about that model (its fitted value there is just the
anchor, 1000), so that round is left out of that model's interval, as LMSYS's bootstrap does (its
per-round fits only rate the models they saw). A model with one battle out of n is missed by about
37% of the rounds ((1 - 1/n)^n ~ 1/e); counting those rounds at 1000 would drag its interval to
1000 and collapse the ranks. With `anchor=(model, value)` a round that misses the anchor model is left out
for every model (nothing in it is measured against the anchor). Each leaderboard row reports its
number of battles and of the rounds its interval comes from; a model that no round saw (possible
only with very few rounds) has no interval (None). The reported interval always contains the
point estimate: a percentile interval need not (a skewed bootstrap, or plain float rounding when
every round refits the same battles), so it is widened to the rating if needed. Rank of a model =
1 + number of models whose lower bound is above its upper bound (no interval: rank 1, never above).

Style control: for each battle and each style element (length, markdown headers, list items, bold
spans of the answers), the feature (a - b) / (a + b + 1), z-scored over battles, is an extra
regression column. Its coefficient (log-odds per standard deviation) is reported, and the model
ratings are then controlled for style. Counts come from `style_a` / `style_b` mappings on the
battle if present, else from the assistant messages of `conversation_a` / `conversation_b`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

WINNER_SCORE = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}
STYLE_ELEMENTS = ("length", "headers", "lists", "bold")

# ----------------------------------------------------------------------------- style counts

_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_TOKEN = re.compile(r"\w+|[^\w\s]")
_HEADER = re.compile(r"^#{1,6}\s+\S", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+?\*\*|__[^_\n]+?__")


def style_counts(text: str) -> dict[str, int]:
    """Style counts of one answer: length (words + punctuation marks, a tokenizer-free token count),
    markdown headers, list items and bold spans (the last three outside fenced code blocks)."""
    prose = _CODE_BLOCK.sub("", text)
    return {
        "length": len(_TOKEN.findall(text)),
        "headers": len(_HEADER.findall(prose)),
        "lists": len(_LIST_ITEM.findall(prose)),
        "bold": len(_BOLD.findall(prose)),
    }


def conversation_style(conversation: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Style counts summed over the assistant messages of a conversation ([{role, content}, ...])."""
    total = dict.fromkeys(STYLE_ELEMENTS, 0)
    for message in conversation:
        if message.get("role") == "assistant":
            for key, value in style_counts(str(message.get("content") or "")).items():
                total[key] += value
    return total


# ----------------------------------------------------------------------------- battles -> arrays


def _field(battle: Any, key: str, position: int | None = None) -> Any:
    if isinstance(battle, Mapping):
        return battle.get(key)
    if isinstance(battle, (tuple, list)) and position is not None:
        return battle[position]
    return getattr(battle, key, None)


def _battle_style(battle: Any, side: str, index: int) -> dict[str, int]:
    counts = _field(battle, f"style_{side}")
    if counts is None:
        conversation = _field(battle, f"conversation_{side}")
        if conversation is None:
            raise ValueError(
                f"battle {index}: style control needs style_{side} counts or conversation_{side} texts"
            )
        counts = conversation_style(conversation)
    missing = [key for key in STYLE_ELEMENTS if key not in counts]
    if missing:
        raise ValueError(f"battle {index}: style_{side} lacks counts for {missing}")
    return {key: counts[key] for key in STYLE_ELEMENTS}


@dataclass
class BattleArrays:
    """Battles as arrays: model indices into `models` (sorted names), the score of model_a, and
    (with style control) the z-scored style features."""

    models: list[str]
    a: np.ndarray  # (n,) int, index of model_a
    b: np.ndarray  # (n,) int, index of model_b
    score: np.ndarray  # (n,) float, 1 = a won, 0 = b won, 0.5 = tie
    style: np.ndarray | None = None  # (n, len(STYLE_ELEMENTS)) z-scored (a-b)/(a+b+1), or None


def battle_arrays(battles: Iterable[Any], style_control: bool = False) -> BattleArrays:
    """Validate battles and turn them into `BattleArrays`; errors name the battle index."""
    names_a, names_b, scores, style_a, style_b = [], [], [], [], []
    for i, battle in enumerate(battles):
        model_a, model_b = _field(battle, "model_a", 0), _field(battle, "model_b", 1)
        winner = _field(battle, "winner", 2)
        if not isinstance(model_a, str) or not isinstance(model_b, str) or not model_a or not model_b:
            raise ValueError(f"battle {i}: model_a and model_b must be non-empty strings")
        if model_a == model_b:
            raise ValueError(f"battle {i}: model_a and model_b are the same model {model_a!r}")
        if winner not in WINNER_SCORE:
            raise ValueError(f"battle {i}: winner must be one of {sorted(WINNER_SCORE)}, got {winner!r}")
        names_a.append(model_a)
        names_b.append(model_b)
        scores.append(WINNER_SCORE[winner])
        if style_control:
            style_a.append(_battle_style(battle, "a", i))
            style_b.append(_battle_style(battle, "b", i))
    if not scores:
        raise ValueError("no battles to rate")
    models = sorted(set(names_a) | set(names_b))
    index = {name: i for i, name in enumerate(models)}
    arrays = BattleArrays(
        models=models,
        a=np.array([index[n] for n in names_a], dtype=np.int64),
        b=np.array([index[n] for n in names_b], dtype=np.int64),
        score=np.array(scores, dtype=np.float64),
    )
    if style_control:
        ca = np.array([[s[k] for k in STYLE_ELEMENTS] for s in style_a], dtype=np.float64)  # (n, k)
        cb = np.array([[s[k] for k in STYLE_ELEMENTS] for s in style_b], dtype=np.float64)  # (n, k)
        raw = (ca - cb) / (ca + cb + 1.0)  # (n, k) in (-1, 1)
        std = raw.std(axis=0)
        arrays.style = (raw - raw.mean(axis=0)) / np.where(std > 0, std, 1.0)  # constant column -> zeros
    return arrays


# ----------------------------------------------------------------------------- the solver


def _design(arrays: BattleArrays) -> tuple[np.ndarray, np.ndarray]:
    """Design matrix X (m, d) and the row of X each battle adds to (n,).

    Without style features battles collapse onto their ordered (a, b) pair (m = distinct pairs), so
    the fit costs O(pairs) whatever the number of battles; with style every battle is its own row."""
    p = len(arrays.models)
    if arrays.style is None:
        keys, row_of_battle = np.unique(arrays.a * p + arrays.b, return_inverse=True)
        a, b, extra = keys // p, keys % p, np.zeros((len(keys), 0))
    else:
        row_of_battle = np.arange(len(arrays.score))
        a, b, extra = arrays.a, arrays.b, arrays.style
    X = np.zeros((len(a), p + extra.shape[1]))
    X[np.arange(len(a)), a] = 1.0
    X[np.arange(len(a)), b] = -1.0
    X[:, p:] = extra
    return X, row_of_battle


def _neg_log_lik(
    theta: np.ndarray, X: np.ndarray, n: np.ndarray, s: np.ndarray, pen: np.ndarray
) -> np.ndarray:
    """Penalised negative log-likelihood per round (B,):
    -sum[s log sig(z) + (n - s) log sig(-z)] + 1/2 theta^T pen theta, with z = X theta."""
    z = theta @ X.T  # (B, m)
    nll = (s * np.logaddexp(0.0, -z) + (n - s) * np.logaddexp(0.0, z)).sum(1)
    return nll + 0.5 * np.einsum("bi,ij,bj->b", theta, pen, theta)


def _weighted_gram(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(B, d, d) stack of X^T diag(v_b) X for v (B, m); one (d, m) @ (m, d) BLAS product per round."""
    Xt = np.ascontiguousarray(X.T)  # (d, m); a C-ordered left operand is several times faster in BLAS
    return np.stack([(Xt * vb) @ X for vb in v])


def fit_logistic(
    X: np.ndarray,
    n: np.ndarray,
    s: np.ndarray,
    num_shift_free: int = 0,
    l2: float = 1e-6,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> np.ndarray:
    """Weighted logistic regression for B problems at once, by damped Newton's method.

    X (m, d) design; n (B, m) row weights (battle counts); s (B, m) weighted score of side a
    (wins + ties / 2). Maximises sum[s log sig(X theta) + (n - s) log sig(-X theta)] - penalty.
    The first `num_shift_free` columns (the models) enter only through differences, so adding a
    constant to them changes nothing; the penalty l2/2 |theta|^2 + 1/2 (sum of those columns)^2
    pins that sum to 0 (the second term is 0 at the optimum, it only keeps Newton well conditioned).
    Returns theta (B, d) in log-odds units."""
    B, d = n.shape[0], X.shape[1]
    shift = (np.arange(d) < num_shift_free).astype(np.float64)
    pen = l2 * np.eye(d) + np.outer(shift, shift)  # (d, d)
    theta = np.zeros((B, d))
    loss = _neg_log_lik(theta, X, n, s, pen)
    for _ in range(max_iter):
        mu = np.exp(-np.logaddexp(0.0, -(theta @ X.T)))  # (B, m) P(a wins) = sigmoid(z), overflow-free
        grad = (s - n * mu) @ X - theta @ pen  # (B, d) gradient of the objective
        hess = _weighted_gram(X, n * mu * (1.0 - mu)) + pen  # (B, d, d) negative Hessian, PD
        step = np.linalg.solve(hess, grad[..., None])[..., 0]  # (B, d)
        t = np.ones(B)
        new = theta + step
        new_loss = _neg_log_lik(new, X, n, s, pen)
        for _ in range(50):  # backtrack per round where the full step went uphill
            bad = new_loss > loss + 1e-12 * (1.0 + np.abs(loss))
            if not bad.any():
                break
            t[bad] *= 0.5
            new[bad] = theta[bad] + t[bad, None] * step[bad]
            new_loss[bad] = _neg_log_lik(new[bad], X, n[bad], s[bad], pen)
        moved = np.abs(new - theta).max()
        theta, loss = new, new_loss
        if moved < tol:
            break
    return theta


# ----------------------------------------------------------------------------- fits


@dataclass
class BradleyTerryFit:
    """Point estimate: `ratings` (p,) on the Elo scale, aligned with `models`; `style_coef` (k,) in
    log-odds per standard deviation of each style feature (empty without style control)."""

    models: list[str]
    ratings: np.ndarray
    style_names: tuple[str, ...] = ()
    style_coef: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict[str, float]:
        return {m: float(r) for m, r in zip(self.models, self.ratings)}


@dataclass
class BootstrapResult:
    """Bootstrap replicates: `ratings` (rounds, p), NaN where a round's resample missed the model
    (or, with an anchor model, missed the anchor), and `style_coef` (rounds, k)."""

    models: list[str]
    ratings: np.ndarray
    style_names: tuple[str, ...] = ()
    style_coef: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def interval(self, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of each model's ratings over the rounds that saw it: (low (p,),
        high (p,)); NaN for a model no round saw."""
        return _percentiles(self.ratings, confidence)

    def style_interval(self, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        return _percentiles(self.style_coef, confidence)

    def rounds(self) -> np.ndarray:
        """(p,) number of rounds each model's interval comes from."""
        return (~np.isnan(self.ratings)).sum(axis=0)


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-column percentile interval of `samples` (rounds, p), skipping NaN; NaN if a column has none."""
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.full(samples.shape[1], np.nan), np.full(samples.shape[1], np.nan)
    for j, column in enumerate(samples.T):
        seen = column[~np.isnan(column)]
        if seen.size:
            lo[j], hi[j] = np.percentile(seen, [tail, 100.0 - tail])
    return lo, hi


def _to_ratings(
    theta: np.ndarray, models: list[str], base: float, scale: float, anchor: tuple[str, float] | None
) -> np.ndarray:
    """Log-odds (B, p) -> Elo-scale ratings (B, p), anchored on the mean or on one model."""
    points = theta * scale / math.log(10.0)
    if anchor is None:
        return points - points.mean(axis=1, keepdims=True) + base
    model, value = anchor
    if model not in models:
        raise ValueError(f"anchor model {model!r} has no battles")
    return points - points[:, [models.index(model)]] + value


def _arrays(battles: Iterable[Any] | BattleArrays, style_control: bool) -> BattleArrays:
    if isinstance(battles, BattleArrays):
        if style_control and battles.style is None:
            raise ValueError("style control needs BattleArrays built with style_control=True")
        return battles if style_control else BattleArrays(battles.models, battles.a, battles.b, battles.score)
    return battle_arrays(battles, style_control)


def fit_bradley_terry(
    battles: Iterable[Any] | BattleArrays,
    *,
    style_control: bool = False,
    base: float = 1000.0,
    scale: float = 400.0,
    anchor: tuple[str, float] | None = None,
    l2: float = 1e-6,
) -> BradleyTerryFit:
    """Maximum-likelihood Bradley-Terry ratings (optionally style-controlled) of all battles."""
    arrays = _arrays(battles, style_control)
    X, row = _design(arrays)
    m, p = X.shape[0], len(arrays.models)
    n = np.bincount(row, minlength=m)[None].astype(np.float64)  # (1, m)
    s = np.bincount(row, weights=arrays.score, minlength=m)[None]  # (1, m)
    theta = fit_logistic(X, n, s, p, l2)
    return BradleyTerryFit(
        models=arrays.models,
        ratings=_to_ratings(theta[:, :p], arrays.models, base, scale, anchor)[0],
        style_names=STYLE_ELEMENTS if style_control else (),
        style_coef=theta[0, p:],
    )


def bootstrap_bradley_terry(
    battles: Iterable[Any] | BattleArrays,
    *,
    num_rounds: int = 100,
    seed: int = 0,
    style_control: bool = False,
    base: float = 1000.0,
    scale: float = 400.0,
    anchor: tuple[str, float] | None = None,
    l2: float = 1e-6,
    max_chunk_elements: int = 20_000_000,
) -> BootstrapResult:
    """Refit on `num_rounds` resamples (with replacement) of the battles; seeded and deterministic.

    Rounds are solved together in chunks of at most `max_chunk_elements` (rounds x rows) numbers."""
    if num_rounds < 1:
        raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
    arrays = _arrays(battles, style_control)
    X, row = _design(arrays)
    m, p, num = X.shape[0], len(arrays.models), len(arrays.score)
    rng = np.random.default_rng(seed)
    chunk = max(1, max_chunk_elements // max(num, m))
    thetas, seen = [], []
    for start in range(0, num_rounds, chunk):
        rounds = min(chunk, num_rounds - start)
        pick = rng.integers(0, num, size=(rounds, num))  # (R, num) battle indices drawn per round
        flat = (row[pick] + m * np.arange(rounds)[:, None]).ravel()  # row id, offset per round
        n = np.bincount(flat, minlength=rounds * m).reshape(rounds, m).astype(np.float64)  # (R, m)
        s = np.bincount(flat, weights=arrays.score[pick].ravel(), minlength=rounds * m).reshape(rounds, m)
        thetas.append(fit_logistic(X, n, s, p, l2))
        seen.append(_models_seen(arrays, pick))
    theta = np.concatenate(thetas)  # (num_rounds, d)
    ratings = _to_ratings(theta[:, :p], arrays.models, base, scale, anchor)
    present = np.concatenate(seen)  # (num_rounds, p)
    if anchor is not None:  # a round without the anchor model measures nobody against it
        present &= present[:, [arrays.models.index(anchor[0])]]
    return BootstrapResult(
        models=arrays.models,
        ratings=np.where(present, ratings, np.nan),
        style_names=STYLE_ELEMENTS if style_control else (),
        style_coef=theta[:, p:],
    )


def _models_seen(arrays: BattleArrays, pick: np.ndarray) -> np.ndarray:
    """(R, p) whether each round's resample `pick` (R, num) has a battle of each model.

    A model missing from a round keeps log-odds 0 there (the penalty's minimum): a number that says
    nothing about it (with the mean anchor, exactly 1000)."""
    rounds, p = pick.shape[0], len(arrays.models)
    offset = p * np.arange(rounds)[:, None]
    battles = np.bincount((arrays.a[pick] + offset).ravel(), minlength=rounds * p)
    battles += np.bincount((arrays.b[pick] + offset).ravel(), minlength=rounds * p)
    return battles.reshape(rounds, p) > 0


def online_elo(
    battles: Iterable[Any], *, k: float = 4.0, base: float = 1000.0, scale: float = 400.0
) -> dict[str, float]:
    """Classic online Elo in battle order: R_a += k (S_a - E_a), E_a = 1 / (1 + 10^((R_b - R_a)/scale))."""
    ratings: dict[str, float] = {}
    for i, battle in enumerate(battles):
        a, b = _field(battle, "model_a", 0), _field(battle, "model_b", 1)
        score = WINNER_SCORE.get(_field(battle, "winner", 2))
        if score is None:
            raise ValueError(f"battle {i}: winner must be one of {sorted(WINNER_SCORE)}")
        ra, rb = ratings.get(a, base), ratings.get(b, base)
        expected = 1.0 / (1.0 + 10.0 ** ((rb - ra) / scale))
        ratings[a] = ra + k * (score - expected)
        ratings[b] = rb - k * (score - expected)
    return ratings


def compute_ranks(ci_low: np.ndarray, ci_high: np.ndarray) -> np.ndarray:
    """Rank (p,) = 1 + number of models whose lower bound is above this model's upper bound.
    A NaN bound (no interval) is unbounded: such a model is rank 1 and never above another."""
    lo, hi = np.where(np.isnan(ci_low), -np.inf, ci_low), np.where(np.isnan(ci_high), np.inf, ci_high)
    return 1 + (lo[None, :] > hi[:, None]).sum(axis=1)


# ----------------------------------------------------------------------------- leaderboard


@dataclass
class LeaderboardRow:
    """One model: rating and CI on the Elo scale (ci_low <= rating <= ci_high; None if no bootstrap
    round saw the model), the battles and bootstrap rounds behind them, rank from the CIs, online
    Elo, win / tie / loss counts."""

    model: str
    rating: float
    ci_low: float | None
    ci_high: float | None
    num_battles: int
    ci_rounds: int
    rank: int
    elo: float
    wins: int
    ties: int
    losses: int


@dataclass
class StyleRow:
    """One style coefficient: log-odds of winning per standard deviation of (a-b)/(a+b+1)."""

    name: str
    coef: float
    ci_low: float
    ci_high: float


def _ci_text(row: LeaderboardRow) -> str:
    if row.ci_low is None or row.ci_high is None:
        return "n/a (no round)"
    return f"{row.ci_low - row.rating:+.1f} / {row.ci_high - row.rating:+.1f}"


@dataclass
class Leaderboard:
    """Rows sorted by rating (best first); `style` is empty unless style control was on."""

    rows: list[LeaderboardRow]
    style_control: bool = False
    style: list[StyleRow] = field(default_factory=list)
    num_battles: int = 0
    num_bootstrap: int = 0
    confidence: float = 0.95
    anchor: str = "mean rating = 1000"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (for the leaderboard page / API)."""
        return asdict(self)

    def row(self, model: str) -> LeaderboardRow:
        for r in self.rows:
            if r.model == model:
                return r
        raise KeyError(model)

    def _table(self) -> tuple[list[str], list[list[str]]]:
        pct = f"{100 * self.confidence:g}% CI"
        header = ["Rank", "Model", "Rating", pct, "Battles", "Elo", "W / T / L"]
        body = [
            [
                str(r.rank),
                r.model,
                f"{r.rating:.1f}",
                _ci_text(r),
                str(r.num_battles),
                f"{r.elo:.1f}",
                f"{r.wins} / {r.ties} / {r.losses}",
            ]
            for r in self.rows
        ]
        return header, body

    def _caption(self) -> str:
        kind = "style-controlled Bradley-Terry" if self.style_control else "Bradley-Terry"
        return (
            f"{kind} ratings from {self.num_battles} battles ({self.anchor}; "
            f"{self.num_bootstrap} bootstrap rounds); Elo = online Elo, K=4"
        )

    def to_markdown(self) -> str:
        header, body = self._table()
        lines = [
            "| " + " | ".join(header) + " |",
            "|---:|:---|" + "|".join(["---:"] * (len(header) - 2)) + "|",
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        lines += ["", self._caption()]
        if self.style:
            lines += ["", "| Style feature | Coefficient | CI |", "|:---|---:|---:|"]
            lines += [
                f"| {s.name} | {s.coef:+.3f} | [{s.ci_low:+.3f}, {s.ci_high:+.3f}] |" for s in self.style
            ]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        header, body = self._table()
        widths = [max(len(c) for c in col) for col in zip(header, *body)]

        def line(cells: list[str]) -> str:  # model names left-aligned, numbers right-aligned
            return "  ".join(
                c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )

        lines = [line(header), "  ".join("-" * w for w in widths)] + [line(cells) for cells in body]
        lines += [self._caption()]
        if self.style:
            lines.append(
                "style coefficients (log-odds per std): "
                + ", ".join(f"{s.name} {s.coef:+.3f} [{s.ci_low:+.3f}, {s.ci_high:+.3f}]" for s in self.style)
            )
        return "\n".join(lines) + "\n"

    __str__ = to_text


def compute_leaderboard(
    battles: Iterable[Any],
    *,
    style_control: bool = False,
    num_bootstrap: int = 100,
    seed: int = 0,
    confidence: float = 0.95,
    anchor: tuple[str, float] | None = None,
    base: float = 1000.0,
    scale: float = 400.0,
    elo_k: float = 4.0,
) -> Leaderboard:
    """Everything at once: MLE ratings, bootstrap CIs and ranks, online Elo and win/tie/loss counts."""
    battles = list(battles)
    arrays = battle_arrays(battles, style_control)
    fit = fit_bradley_terry(arrays, style_control=style_control, base=base, scale=scale, anchor=anchor)
    boot = bootstrap_bradley_terry(
        arrays,
        num_rounds=num_bootstrap,
        seed=seed,
        style_control=style_control,
        base=base,
        scale=scale,
        anchor=anchor,
    )
    lo, hi = boot.interval(confidence)
    lo, hi = np.minimum(lo, fit.ratings), np.maximum(hi, fit.ratings)  # contain the estimate; NaN stays
    ranks = compute_ranks(lo, hi)
    rounds = boot.rounds()
    elo = online_elo(battles, k=elo_k, base=base, scale=scale)
    p = len(arrays.models)
    wins = np.bincount(arrays.a, arrays.score == 1.0, p) + np.bincount(arrays.b, arrays.score == 0.0, p)
    ties = np.bincount(arrays.a, arrays.score == 0.5, p) + np.bincount(arrays.b, arrays.score == 0.5, p)
    played = np.bincount(arrays.a, minlength=p) + np.bincount(arrays.b, minlength=p)
    rows = [
        LeaderboardRow(
            model=model,
            rating=float(fit.ratings[i]),
            ci_low=None if np.isnan(lo[i]) else float(lo[i]),
            ci_high=None if np.isnan(hi[i]) else float(hi[i]),
            num_battles=int(played[i]),
            ci_rounds=int(rounds[i]),
            rank=int(ranks[i]),
            elo=float(elo[model]),
            wins=int(wins[i]),
            ties=int(ties[i]),
            losses=int(played[i] - wins[i] - ties[i]),
        )
        for i, model in enumerate(arrays.models)
    ]
    rows.sort(key=lambda r: (-r.rating, r.model))
    style: list[StyleRow] = []
    if style_control:
        slo, shi = boot.style_interval(confidence)
        style = [
            StyleRow(name, float(c), float(a), float(b))
            for name, c, a, b in zip(fit.style_names, fit.style_coef, slo, shi)
        ]
    return Leaderboard(
        rows=rows,
        style_control=style_control,
        style=style,
        num_battles=len(battles),
        num_bootstrap=num_bootstrap,
        confidence=confidence,
        anchor=f"{anchor[0]} = {anchor[1]:g}" if anchor else f"mean rating = {base:g}",
    )
