// The battle page: start a battle, follow both answers over server-sent events, vote, reveal the names.
"use strict";

const $ = (id) => document.getElementById(id);
const SIDES = ["a", "b"];
const VOTE_TEXT = {
  model_a: "You voted for A.",
  model_b: "You voted for B.",
  tie: "You voted a tie.",
  "tie (bothbad)": "You voted both bad.",
};
let battleId = null;

function setStatus(text) {
  $("status").textContent = text;
}

function setVoting(enabled) {
  for (const button of document.querySelectorAll("#votes button")) button.disabled = !enabled;
}

function clearPanes() {
  for (const side of SIDES) {
    $(`answer-${side}`).textContent = "";
    $(`thinking-${side}`).textContent = "";
    $(`thinking-box-${side}`).hidden = true;
    $(`name-${side}`).textContent = "";
    $(`pane-${side}`).classList.remove("done", "failed", "winner");
  }
  $("result").textContent = "";
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
  return data;
}

function onEvent(event) {
  if (event.type === "delta") {
    if (event.reasoning_content) {
      $(`thinking-box-${event.side}`).hidden = false;
      $(`thinking-${event.side}`).textContent += event.reasoning_content;
    }
    $(`answer-${event.side}`).textContent += event.content;
  } else if (event.type === "finish") {
    $(`pane-${event.side}`).classList.add("done");
  } else if (event.type === "error") {
    $(`pane-${event.side}`).classList.add("failed");
    $(`answer-${event.side}`).textContent += `\n[${event.message}]`;
  } else if (event.type === "end") {
    $("send").disabled = false;
    if (event.complete) {
      setVoting(true);
      setStatus("Which answer is better?");
    } else {
      setStatus("This battle cannot be voted on. Ask again for a new one.");
    }
  }
}

function follow(id) {
  const source = new EventSource(`/api/battles/${encodeURIComponent(id)}/stream`);
  // every connection replays the battle from its first event, so a reconnect starts from clean panes
  source.onopen = () => clearPanes();
  source.onmessage = (message) => {
    if (message.data === "[DONE]") {
      source.close();
      return;
    }
    onEvent(JSON.parse(message.data));
  };
}

$("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  setVoting(false);
  clearPanes();
  $("send").disabled = true;
  setStatus("Both models are answering...");
  try {
    battleId = (await post("/api/battles", { prompt })).battle_id;
  } catch (error) {
    setStatus(error.message);
    $("send").disabled = false;
    return;
  }
  $("battle").hidden = false;
  follow(battleId);
});

for (const button of document.querySelectorAll("#votes button")) {
  button.addEventListener("click", async () => {
    setVoting(false);
    try {
      const battle = await post("/api/vote", { battle_id: battleId, winner: button.dataset.winner });
      $("name-a").textContent = battle.model_a;
      $("name-b").textContent = battle.model_b;
      if (battle.winner === "model_a") $("pane-a").classList.add("winner");
      if (battle.winner === "model_b") $("pane-b").classList.add("winner");
      $("result").textContent = `${VOTE_TEXT[battle.winner]} Model A was ${battle.model_a}, model B was ${battle.model_b}.`;
      setStatus("Thanks for voting! Ask again for a new battle.");
    } catch (error) {
      setStatus(error.message);
    }
  });
}
