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
    list.replaceChildren(...hits.slice(0, LIMIT).map((i) => crateRow(data, crates[i])));
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
