"use strict";
// The failures page: the crates of the cause or verdict in the URL (#cause=E0425,
// #verdict=build-fail), most downloaded first, each linking to its log page, which has a link
// to the first error in it.
(function () {
  const LIMIT = 2000;
  const data = window.CRATER;
  const title = document.getElementById("chosen-title");
  const list = document.getElementById("crates");
  if (!data) {
    title.textContent = "The crate list (data.js) could not be loaded.";
    return;
  }
  const crates = [...data.crates];
  crates.sort((a, b) => b[4] - a[4] || (a[0] < b[0] ? -1 : 1));

  function show() {
    const params = new URLSearchParams(location.hash.slice(1));
    const cause = params.get("cause");
    const verdict = params.get("verdict");
    let chosen;
    let what;
    if (cause !== null) {
      const id = data.causes.indexOf(cause);
      chosen = crates.filter((c) => c[3].includes(id) && data.verdicts[c[2]] !== "ub");
      what = "failed with " + cause;
    } else if (verdict !== null) {
      chosen = crates.filter((c) => data.verdicts[c[2]] === verdict);
      what = "are " + verdict;
    } else {
      return;
    }
    const shown = chosen.length > LIMIT ? " (the first " + LIMIT + " shown)" : "";
    title.textContent = chosen.length + (chosen.length === 1 ? " crate " : " crates ") + what + shown;
    list.replaceChildren(...chosen.slice(0, LIMIT).map((c) => crateRow(data, c)));
  }

  window.addEventListener("hashchange", show);
  show();
})();
