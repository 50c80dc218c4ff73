// The leaderboard page: the Bradley-Terry table from /api/leaderboard and its plot, with or without style control.
"use strict";

const $ = (id) => document.getElementById(id);
const signed = (x, digits) => (x >= 0 ? "+" : "") + x.toFixed(digits);
// a model that no bootstrap round saw has no interval (null bounds)
const interval = (r) =>
  r.ci_low === null || r.ci_high === null
    ? "n/a"
    : `${signed(r.ci_low - r.rating, 1)} / ${signed(r.ci_high - r.rating, 1)}`;

function fill(tbody, rows) {
  tbody.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.append(td);
      }
      return tr;
    }),
  );
}

async function load() {
  const styleControl = $("style-control").checked ? 1 : 0;
  const response = await fetch(`/api/leaderboard?style_control=${styleControl}`);
  const data = await response.json();
  const board = data.leaderboard;
  $("empty").hidden = board !== null;
  $("board").hidden = $("plot").hidden = board === null;
  $("style").hidden = board === null || board.style.length === 0;
  if (board === null) return;
  fill(
    $("board").tBodies[0],
    board.rows.map((r) => [
      r.rank,
      r.model,
      r.rating.toFixed(1),
      interval(r),
      r.num_battles,
      r.elo.toFixed(1),
      `${r.wins} / ${r.ties} / ${r.losses}`,
    ]),
  );
  fill(
    $("style").tBodies[0],
    board.style.map((s) => [s.name, signed(s.coef, 3), `[${signed(s.ci_low, 3)}, ${signed(s.ci_high, 3)}]`]),
  );
  const kind = board.style_control ? "Style-controlled Bradley-Terry" : "Bradley-Terry";
  $("caption").textContent =
    `${kind} ratings from ${board.num_battles} battles (${board.anchor}; ` +
    `${board.num_bootstrap} bootstrap rounds); Elo = online Elo.`;
  $("plot").src = `/leaderboard.png?style_control=${styleControl}&votes=${data.votes}`;
}

$("style-control").addEventListener("change", load);
load();
