// Sign-in pages: an invite or admin link carries its token after '#', which the browser never sends to
// the server (so it cannot end up in a log). Move it into the form, wipe it from the address bar, submit.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-fragment-token]");
  const token = decodeURIComponent(window.location.hash.slice(1));
  if (!form || !token) return;
  form.elements.token.value = token;
  history.replaceState(null, "", window.location.pathname);
  form.submit();
});
