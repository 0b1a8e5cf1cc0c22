// The search page: asks the API this server serves, shows ranked chunks with the query's
// words highlighted. Builds the DOM from text nodes only (no innerHTML), so a chunk's
// content can never run as markup.
"use strict";

const STOP = new Set(("a an and are as at be by can do does for from how i in is it my of on " +
  "or the to what when where which who why with you your").split(" "));
const WORD = /[\p{L}\p{N}_]+/gu;
const $ = (id) => document.getElementById(id);

// Close enough for highlighting, as the command line does it: "filters", "filtering" and
// "filtered" share "filt".
function stem(word) {
  return word.length <= 4 ? word : word.slice(0, Math.max(4, word.length - 3));
}

function terms(query) {
  return [...new Set((query.toLowerCase().match(WORD) || []).filter((w) => !STOP.has(w)).map(stem))];
}

function highlighted(text, wanted) {
  const out = document.createDocumentFragment();
  let at = 0;
  for (const m of text.matchAll(WORD)) {
    const s = stem(m[0].toLowerCase());
    if (!wanted.some((t) => s.startsWith(t))) continue;
    out.append(text.slice(at, m.index));
    const mark = document.createElement("mark");
    mark.textContent = m[0];
    out.append(mark);
    at = m.index + m[0].length;
  }
  out.append(text.slice(at));
  return out;
}

function element(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const e = data.error || {};
    throw new Error(`${response.status} ${e.code || ""}: ${e.message || response.statusText}`);
  }
  return data;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

async function loadCollections() {
  const select = $("collection");
  const wanted = select.value || document.body.dataset.collection;
  try {
    const { collections } = await call("GET", "/v1/collections");
    select.replaceChildren(...collections.map((c) => {
      const o = element("option", "", `${c.name} (${c.chunks})`);
      o.value = c.name;
      return o;
    }));
    if (collections.some((c) => c.name === wanted)) select.value = wanted;
    if (!collections.length) status("No collections yet: ingest some documents first.");
  } catch (err) {
    status(err.message, true);
  }
}

function show(results, query) {
  const wanted = terms(query);
  $("results").replaceChildren(...results.map((hit, i) => {
    const li = element("li", "hit");
    li.dataset.chunkId = hit.chunk_id;
    const head = element("div", "head");
    head.append(element("span", "rank", `#${i + 1}`), element("span", "score", hit.score.toFixed(3)),
      element("span", "entity", hit.entity_id), element("span", "chunk", hit.chunk_id));
    const content = element("div", "content");
    content.append(highlighted(hit.content, wanted));
    li.append(head, content);
    if (hit.metadata && Object.keys(hit.metadata).length) {
      li.append(element("pre", "metadata", JSON.stringify(hit.metadata)));
    }
    return li;
  }));
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  const collection = $("collection").value;
  if (!query || !collection) return;
  const kind = document.querySelector("input[name=kind]:checked").value;
  const body = { text: query, k: Number($("k").value) || 5 };
  const filterText = $("filter").value.trim();
  if (filterText) {
    try {
      body.filter = JSON.parse(filterText);
    } catch (err) {
      status(`The filter is not JSON: ${err.message}`, true);
      return;
    }
  }
  $("go").disabled = true;
  status("Searching…");
  const started = performance.now();
  try {
    const data = await call("POST", `/v1/collections/${encodeURIComponent(collection)}/search/${kind}`, body);
    show(data.results, query);
    const ms = Math.round(performance.now() - started);
    status(`${data.results.length} result${data.results.length === 1 ? "" : "s"} (${kind}, ${ms} ms)`);
  } catch (err) {
    $("results").replaceChildren();
    status(err.message, true);
  } finally {
    $("go").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = sessionStorage.getItem("rag-pgstore-key") || "";
  $("key").addEventListener("change", () => {
    sessionStorage.setItem("rag-pgstore-key", $("key").value.trim());
    loadCollections();
  });
  $("search").addEventListener("submit", search);
  loadCollections();
});
