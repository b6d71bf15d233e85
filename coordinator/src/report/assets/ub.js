"use strict";
// The UB page: a crate chosen in the list opens its log in the frame beside it (the log page
// scrolls to its first report by itself) and goes into the URL, so the link can be shared.
(function () {
  const list = document.getElementById("ub-list");
  const frame = document.getElementById("log");
  const items = [...list.querySelectorAll("li[data-crate]")];

  function select(item, remember) {
    for (const other of items) other.classList.toggle("selected", other === item);
    const link = item.querySelector("a.name");
    if (frame.getAttribute("src") !== link.getAttribute("href")) {
      frame.setAttribute("src", link.getAttribute("href"));
    }
    if (remember) {
      const params = new URLSearchParams();
      params.set("crate", item.dataset.crate);
      history.replaceState(null, "", "#" + params.toString());
    }
  }

  function fromUrl() {
    const wanted = new URLSearchParams(location.hash.slice(1)).get("crate");
    return items.find((item) => item.dataset.crate === wanted);
  }

  list.addEventListener("click", (e) => {
    const link = e.target.closest("a.name");
    if (!link) return;
    e.preventDefault();
    select(link.closest("li[data-crate]"), true);
  });
  window.addEventListener("hashchange", () => {
    const item = fromUrl();
    if (item) select(item, false);
  });
  const initial = fromUrl() || items[0];
  select(initial, false);
  // Into the list's view, without scrolling the page away from its header.
  list.scrollTop = initial.offsetTop - list.offsetTop;
})();
