// The demo board: project p1 as a Kanban board, kept live by the pm-realtime browser client.
// Plain DOM and textContent only (event payloads are untrusted text); nothing logs to the console.
import { PmClient } from "./pm-client.js";

const COLUMNS = new Set(["todo", "doing", "done"]);
const MAX_LOG_LINES = 50;
const decoder = new TextDecoder();

const byId = (id) => document.getElementById(id);
const status = byId("status");
const connection = byId("connection");
const notice = byId("notice");
const problem = byId("problem");
const log = byId("log");

/** The dev server mints a token for the page; a restarted dev server has a new secret, so ask again. */
async function fetchConfig() {
  const response = await fetch("config.json", { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) {
    throw new Error(`config.json answered HTTP ${response.status}`);
  }
  return response.json();
}

function describe(change) {
  switch (change.state) {
    case "connecting":
      return "Connecting…";
    case "open":
      return "Live";
    case "reconnecting":
      return `Reconnecting in ${(change.delayMs / 1000).toFixed(1)} s (closed ${change.closeCode}${change.closeReason ? " " + change.closeReason : ""})`;
    case "closed":
      return change.stopReason === "client-closed" ? "Disconnected" : `Stopped (closed ${change.closeCode ?? ""} ${change.closeReason ?? ""})`;
    default:
      return "Not connected";
  }
}

function showState(change) {
  status.dataset.state = change.state;
  status.textContent = describe(change);
}

function showProblem(text) {
  problem.textContent = text;
  problem.hidden = text === "";
}

function showRecovery(recovery) {
  notice.dataset.recovered = String(recovery.recovered);
  notice.textContent = recovery.recovered
    ? `Reconnected and resumed: ${recovery.replayed} missed event(s) replayed.`
    : "Reconnected, but events may have been missed (the server restarted or its history no longer reaches back). " +
      "A real application refetches the board now.";
  notice.hidden = false;
}

function cardOf(event) {
  try {
    const card = JSON.parse(decoder.decode(event.payload));
    if (card && typeof card.id === "string" && COLUMNS.has(card.column)) {
      return { id: card.id, title: typeof card.title === "string" ? card.title : card.id, column: card.column };
    }
  } catch {
    // Not a card: the log line still shows the event.
  }
  return undefined;
}

function placeCard(card, event) {
  let item = [...document.querySelectorAll(".card")].find((element) => element.dataset.cardId === card.id);
  if (item === undefined) {
    item = document.createElement("li");
    item.className = "card";
    item.dataset.cardId = card.id;
  }
  item.replaceChildren(card.title);
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${event.type} · seq ${event.position?.seq ?? "?"}${event.actorUserId ? " · " + event.actorUserId : ""}`;
  item.append(meta);
  document.querySelector(`.column[data-column="${card.column}"] .cards`).append(item);
}

function logEvent(event, card) {
  const line = document.createElement("li");
  line.dataset.eventId = event.eventId;
  const scope = event.scope ?? {};
  const position = event.position ? `${event.position.epoch.slice(0, 8)}:${event.position.seq}` : "?";
  line.textContent = `${position} ${event.type} project=${scope.projectId}` +
    (scope.sprintId ? ` sprint=${scope.sprintId}` : "") + (scope.workItemId ? ` item=${scope.workItemId}` : "") +
    (card ? ` · ${card.id} → ${card.column}` : ` · ${event.payload.length} bytes`);
  log.prepend(line);
  while (log.children.length > MAX_LOG_LINES) {
    log.lastElementChild.remove();
  }
}

async function main() {
  let config;
  try {
    config = await fetchConfig();
  } catch (error) {
    showProblem(`Could not load the demo configuration: ${error.message}`);
    return;
  }
  byId("project").textContent = config.projectId;
  const client = new PmClient({
    url: config.wsUrl,
    token: config.token,
    getToken: async () => (await fetchConfig()).token,
    subscriptions: { projects: [config.projectId] },
    backoff: { initialMs: 250, maxMs: 5_000 },
  });
  client.on("state", (change) => {
    showState(change);
    if (change.state === "open") {
      showProblem("");
    }
  });
  client.on("welcome", (welcome) => {
    connection.textContent = `connection ${welcome.connectionId.slice(0, 8)} · ${welcome.tenantId}/${welcome.userId}`;
  });
  client.on("recovery", showRecovery);
  client.on("error", (error) => showProblem(`${error.code}: ${error.message}`));
  client.on("event", (event) => {
    const card = cardOf(event);
    logEvent(event, card);
    if (card !== undefined) {
      placeCard(card, event);
    }
  });
  client.connect();
}

main();
