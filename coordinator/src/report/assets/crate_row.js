"use strict";
// What the landing and failures pages share: a crate of data.js as a list item, linking its
// log page (with the store's suffix for log pages: ".html" in a local folder) and its JSON.
function crateRow(data, c) {
  const link = (kind, ext) =>
    kind + "/" + encodeURIComponent(c[0]) + "/" + encodeURIComponent(c[1]) + ext;
  const li = document.createElement("li");
  const name = document.createElement("a");
  name.className = "name";
  name.href = link("logs", data.log_suffix);
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
  json.href = link("results", ".json");
  json.textContent = "JSON";
  li.append(" ", json);
  return li;
}
