// The dashboard's progressive enhancement: every page reads without it.
// - Copy buttons (hidden without JavaScript): copy the text of the element named by
//   data-copy.
// - The overview's cards (data-refresh="N") are read again every N seconds.
"use strict";

function enableCopy(button) {
  const target = document.getElementById(button.dataset.copy);
  if (!target || !navigator.clipboard) {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", async () => {
    await navigator.clipboard.writeText(target.textContent);
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}

function refresh(section) {
  const seconds = Number(section.dataset.refresh);
  setInterval(async () => {
    const answer = await fetch(window.location.href, { credentials: "same-origin" });
    if (!answer.ok) {
      return;
    }
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.getElementById(section.id);
    if (fresh) {
      section.replaceChildren(...fresh.childNodes);
    }
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("button.copy[data-copy]").forEach(enableCopy);
  document.querySelectorAll("[data-refresh]").forEach(refresh);
});
