"use strict";
// The landing page's search: every keystroke filters the crates of data.js (exact name, then
// prefixes, then substrings, each most downloaded first; `-` and `_` are the same, as on
// crates.io) and shows the first hits as links. The query and the verdict filters are kept in the
// URL's fragment, so a search can be shared.
(function () {
  const LIMIT = 100;
  const q = document.getElementById("q");
  const list = document.getElementById("results");
  const count = document.getElementById("count");
  const filters = document.getElementById("filters");
  const data = window.CRATER;
  if (!data) {
    count.textContent = "The crate list (data.js) could not be loaded.";
    return;
  }
  const crates = data.crates;
  const norm = crates.map((c) => c[0].toLowerCase().replace(/-/g, "_"));
  // Most downloaded first, then by name: the order every group of hits is shown in.
  const order = crates.map((_, i) => i);
  order.sort((a, b) => crates[b][4] - crates[a][4] || (norm[a] < norm[b] ? -1 : 1));

  function link(kind, c) {
    const ext = kind === "results" ? ".json" : kind === "logs" ? data.log_suffix : "";
    return kind + "/" + encodeURIComponent(c[0]) + "/" + encodeURIComponent(c[1]) + ext;
  }

  function row(i) {
    const c = crates[i];
    const li = document.createElement("li");
    const name = document.createElement("a");
    name.className = "name";
    name.href = link("logs", c);
    name.textContent = c[0] + " " + c[1];
    const verdict = document.createElement("span");
    verdict.className = "v v-" + data.verdicts[c[2]];
    verdict.textContent = data.verdicts[c[2]];
    li.append(name, " ", verdict);
    if (c[3].length > 0) {
      const causes = document.createElement("span");
      causes.className = "causes";
      causes.textContent = c[3].map((k) => data.causes[k]).join(", ");
      li.append(" ", causes);
    }
    const json = document.createElement("a");
    json.className = "json";
    json.href = link("results", c);
    json.textContent = "JSON";
    li.append(" ", json);
    return li;
  }

  function checked() {
    const set = new Set();
    for (const box of filters.querySelectorAll("input:checked")) set.add(box.value);
    return set;
  }

  function search() {
    const term = q.value.trim().toLowerCase().replace(/-/g, "_");
    const verdicts = checked();
    const exact = [];
    const prefix = [];
    const inside = [];
    for (const i of order) {
      if (!verdicts.has(data.verdicts[crates[i][2]])) continue;
      const n = norm[i];
      if (n === term) exact.push(i);
      else if (n.startsWith(term)) prefix.push(i);
      else if (n.includes(term)) inside.push(i);
    }
    const hits = exact.concat(prefix, inside);
    list.replaceChildren(...hits.slice(0, LIMIT).map(row));
    if (hits.length === 0) {
      count.textContent = "No crate matches.";
    } else {
      const shown = hits.length > LIMIT ? ", the first " + LIMIT + " shown" : "";
      count.textContent = hits.length + (hits.length === 1 ? " crate" : " crates") + shown;
    }
    remember();
  }

  function remember() {
    const off = [...filters.querySelectorAll("input:not(:checked)")].map((b) => b.value);
    const params = new URLSearchParams();
    if (q.value) params.set("q", q.value);
    if (off.length > 0) params.set("hide", off.join(","));
    const hash = params.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }

  function restore() {
    const params = new URLSearchParams(location.hash.slice(1));
    q.value = params.get("q") || "";
    const hide = new Set((params.get("hide") || "").split(","));
    for (const box of filters.querySelectorAll("input")) box.checked = !hide.has(box.value);
  }

  function links() {
    return [...list.querySelectorAll("a.name")];
  }

  q.addEventListener("input", search);
  filters.addEventListener("change", search);
  q.addEventListener("keydown", (e) => {
    const first = links()[0];
    if (e.key === "ArrowDown" && first) {
      e.preventDefault();
      first.focus();
    } else if (e.key === "Enter" && first) {
      location.href = first.href;
    }
  });
  list.addEventListener("keydown", (e) => {
    const all = links();
    const at = all.indexOf(document.activeElement);
    if (at < 0) return;
    if (e.key === "ArrowDown" && at + 1 < all.length) {
      e.preventDefault();
      all[at + 1].focus();
    } else if (e.key === "ArrowUp") {
      e.preventDefault();
      (at === 0 ? q : all[at - 1]).focus();
    } else if (e.key === "Escape") {
      q.focus();
    }
  });
  restore();
  search();
  q.focus();
})();
