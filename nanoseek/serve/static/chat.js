/*
 * chat.js: the nanoseek chat page. Streams POST /v1/chat/completions (SSE) with the parameters from
 * the sidebar, shows the model's thinking (`delta.reasoning_content`) in a collapsible block and the
 * answer (`delta.content`) rendered as Markdown, keeps conversations and settings in localStorage
 * (the API key only in sessionStorage: it is gone when the tab closes, and never sits on disk with
 * the chats), and sends the history back on every turn (without the thinking, as DeepSeek's API
 * expects). Stop aborts the fetch, which makes the server cancel the generation and free its slot.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const STORE = "nanoseek.chat.v1";
  const SETTINGS = "nanoseek.settings.v1";
  const FIELDS = ["system", "thinking", "temperature", "top-p", "max-tokens", "seed"];
  const KEY = "nanoseek.api-key"; // sessionStorage only

  let conversations = load(STORE, []);
  let current = null; // the open conversation
  let controller = null; // AbortController of the request in flight
  let modelName = "";
  const empty = $("empty"); // the hint shown in an empty conversation (kept across re-renders)

  function load(key, fallback) {
    try {
      return JSON.parse(localStorage.getItem(key)) || fallback;
    } catch (e) {
      return fallback;
    }
  }

  function save() {
    localStorage.setItem(STORE, JSON.stringify(conversations));
  }

  // ------------------------------------------------------------------ settings
  function restoreSettings() {
    const saved = load(SETTINGS, {});
    for (const id of FIELDS) {
      const el = $(id);
      if (!(id in saved)) continue;
      if (el.type === "checkbox") el.checked = saved[id];
      else el.value = saved[id];
    }
    if ("api-key" in saved) {
      // an earlier version kept the key with the settings: move it out of localStorage
      if (!sessionStorage.getItem(KEY)) sessionStorage.setItem(KEY, saved["api-key"]);
      delete saved["api-key"];
      localStorage.setItem(SETTINGS, JSON.stringify(saved));
    }
    $("api-key").value = sessionStorage.getItem(KEY) || "";
    showSliders();
  }

  function storeSettings() {
    const values = {};
    for (const id of FIELDS) {
      const el = $(id);
      values[id] = el.type === "checkbox" ? el.checked : el.value;
    }
    localStorage.setItem(SETTINGS, JSON.stringify(values));
    sessionStorage.setItem(KEY, $("api-key").value);
    showSliders();
  }

  function showSliders() {
    $("temperature-value").textContent = $("temperature").value;
    $("top-p-value").textContent = $("top-p").value;
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = $("api-key").value.trim();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  // ------------------------------------------------------------------ conversations
  function newConversation() {
    current = { id: Date.now().toString(36), title: "New chat", messages: [] };
    conversations.unshift(current);
    save();
    renderAll();
  }

  function renderList() {
    const list = $("conversations");
    list.textContent = "";
    for (const conv of conversations) {
      const li = document.createElement("li");
      li.className = conv === current ? "active" : "";
      const title = document.createElement("span");
      title.textContent = conv.title;
      li.appendChild(title);
      const del = document.createElement("button");
      del.type = "button";
      del.title = "Delete";
      del.textContent = "×";
      del.onclick = (event) => {
        event.stopPropagation();
        conversations = conversations.filter((c) => c !== conv);
        if (current === conv) current = conversations[0] || null;
        save();
        if (!current) newConversation();
        else renderAll();
      };
      li.appendChild(del);
      li.onclick = () => {
        if (controller) return; // finish or stop the current answer first
        current = conv;
        renderAll();
      };
      list.appendChild(li);
    }
  }

  function renderAll() {
    renderList();
    const box = $("messages");
    box.textContent = "";
    empty.hidden = current.messages.length > 0;
    box.appendChild(empty);
    for (const m of current.messages) {
      if (m.role === "user") addUser(m.content);
      else fillAssistant(addAssistant(), m, false);
    }
    box.scrollTop = box.scrollHeight;
  }

  // ------------------------------------------------------------------ messages
  function addUser(text) {
    const div = document.createElement("div");
    div.className = "message user";
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    bubble.textContent = text;
    div.appendChild(bubble);
    $("messages").appendChild(div);
  }

  function addAssistant() {
    const div = document.createElement("div");
    div.className = "message assistant";
    const thinking = document.createElement("details");
    thinking.className = "thinking";
    thinking.hidden = true;
    const summary = document.createElement("summary");
    summary.textContent = "Thinking…";
    const thought = document.createElement("div");
    thought.className = "thinking-text";
    thinking.append(summary, thought);
    const answer = document.createElement("div");
    answer.className = "answer";
    const meta = document.createElement("div");
    meta.className = "meta";
    div.append(thinking, answer, meta);
    $("messages").appendChild(div);
    return div;
  }

  function fillAssistant(div, m, streaming) {
    const thinking = div.querySelector(".thinking");
    if (m.reasoning) {
      thinking.hidden = false;
      thinking.querySelector(".thinking-text").textContent = m.reasoning;
      thinking.querySelector("summary").textContent = streaming && !m.content
        ? "Thinking…"
        : "Thought" + (m.seconds ? " for " + m.seconds.toFixed(1) + " s" : "");
      thinking.open = streaming && !m.content; // open while thinking, folded once the answer starts (or is done)
    }
    div.querySelector(".answer").innerHTML = window.renderMarkdown(m.content || "");
    div.classList.toggle("streaming", streaming);
    const meta = div.querySelector(".meta");
    meta.textContent = m.usage ? describeUsage(m.usage, m.finish) : "";
  }

  function describeUsage(u, finish) {
    const reasoning = (u.completion_tokens_details || {}).reasoning_tokens || 0;
    const cost = typeof u.cost === "number" ? " · $" + u.cost.toFixed(6) : "";
    const cut = finish === "length" ? " · cut at the token limit" : "";
    return u.prompt_tokens + " prompt + " + u.completion_tokens + " completion tokens (" +
      reasoning + " thinking)" + cost + cut;
  }

  function showError(text) {
    $("error").hidden = !text;
    $("error").textContent = text || "";
  }

  // ------------------------------------------------------------------ sending
  function requestBody() {
    const messages = [];
    const system = $("system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    for (const m of current.messages) messages.push({ role: m.role, content: m.content || "" });
    const body = {
      model: modelName || undefined,
      messages: messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: Number($("temperature").value),
      top_p: Number($("top-p").value),
      thinking: { type: $("thinking").checked ? "enabled" : "disabled" },
    };
    const maxTokens = parseInt($("max-tokens").value, 10);
    if (maxTokens > 0) body.max_completion_tokens = maxTokens;
    const seed = parseInt($("seed").value, 10);
    if (!Number.isNaN(seed)) body.seed = seed;
    return body;
  }

  async function send(text) {
    showError("");
    current.messages.push({ role: "user", content: text });
    if (current.title === "New chat") current.title = text.slice(0, 40);
    save();
    renderList();
    empty.hidden = true;
    addUser(text);
    const reply = { role: "assistant", content: "", reasoning: "" };
    const div = addAssistant();
    fillAssistant(div, reply, true);
    setBusy(true);
    const started = performance.now();
    let live = true;
    controller = new AbortController();
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify(requestBody()),
        signal: controller.signal,
      });
      if (!response.ok) {
        const err = await response.json().catch(() => ({}));
        throw new Error((err.error && err.error.message) || "HTTP " + response.status);
      }
      let pending = false;
      const repaint = () => {
        pending = false;
        if (!live) return; // the stream ended before this frame
        fillAssistant(div, reply, true);
        $("messages").scrollTop = $("messages").scrollHeight;
      };
      for await (const event of sseEvents(response)) {
        if (event.error) throw new Error(event.error.message);
        if (event.usage) reply.usage = event.usage;
        for (const choice of event.choices || []) {
          const d = choice.delta || {};
          if (d.reasoning_content) reply.reasoning += d.reasoning_content;
          if (d.content) {
            if (!reply.content && reply.reasoning) reply.seconds = (performance.now() - started) / 1000;
            reply.content += d.content;
          }
          if (choice.finish_reason) reply.finish = choice.finish_reason;
        }
        if (!pending) {
          pending = true;
          requestAnimationFrame(repaint);
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") showError(e.message);
      else reply.finish = "stopped";
    } finally {
      live = false;
      controller = null;
      setBusy(false);
      if (!reply.seconds && reply.reasoning) reply.seconds = (performance.now() - started) / 1000;
      fillAssistant(div, reply, false);
      if (reply.content || reply.reasoning) current.messages.push(reply);
      else current.messages.pop(); // nothing came back: let the user retry the same message
      save();
    }
  }

  // Parse a text/event-stream body into JSON events ("data: [DONE]" ends it).
  async function* sseEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trim())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }

  function setBusy(busy) {
    $("send").hidden = busy;
    $("stop").hidden = !busy;
    $("prompt").disabled = busy;
  }

  // ------------------------------------------------------------------ wiring
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || controller) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("new-chat").addEventListener("click", () => {
    if (!controller) newConversation();
  });
  for (const id of [...FIELDS, "api-key"]) $(id).addEventListener("input", storeSettings);

  restoreSettings();
  fetch("/v1/models", { headers: headers() })
    .then((r) => (r.ok ? r.json() : null))
    .then((models) => {
      if (models && models.data && models.data.length) {
        modelName = models.data[0].id;
        $("model-name").textContent = modelName;
      }
    })
    .catch(() => {});
  current = conversations[0]; // reopen the most recent conversation
  if (!current) newConversation();
  else renderAll();
})();
