// Rapport console: the little JavaScript the pages use. Everything works without it except
// the search suggestions of reference inputs and the hiding of settings a field type does not
// take (without it, the schema editor shows them all and the server ignores the others).
"use strict";

// A reference input suggests matching records of its entity as the user types; the value
// stays the record's id (what the server stores), the suggestion shows its name.
document.addEventListener("DOMContentLoaded", () => {
  for (const input of document.querySelectorAll("input[data-reference]")) {
    const list = document.getElementById(input.getAttribute("list"));
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const q = input.value.trim();
        if (q.length < 2) return;
        const url = `/r/${encodeURIComponent(input.dataset.reference)}/options?q=${encodeURIComponent(q)}`;
        try {
          const response = await fetch(url, { credentials: "same-origin" });
          if (!response.ok) return;
          const { data } = await response.json();
          list.replaceChildren(...data.map(({ id, name }) => {
            const option = document.createElement("option");
            option.value = id;
            option.label = name;
            option.textContent = name;
            return option;
          }));
        } catch (_) {
          // Suggestions are a convenience: typing an id still works.
        }
      }, 200);
    });
  }
});

// The schema editor's field form shows only the settings of the chosen type.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form.schema-field");
  if (!form) return;
  const type = form.querySelector("select[name=type]");
  const show = () => {
    for (const setting of form.querySelectorAll("[data-types]")) {
      setting.hidden = !setting.dataset.types.split(" ").includes(type.value);
    }
  };
  type.addEventListener("change", show);
  show();
});

// After a sign-in, the form the ended session interrupted is sent again as typed.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-autosubmit]");
  if (form) form.submit();
});
