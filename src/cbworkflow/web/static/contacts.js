// The contacts page, enhanced: search as you type, and a file too big for the page refused before it is sent.
// Without this script the page works the same by pressing Enter (or the Search button).
(function () {
  "use strict";

  var form = document.getElementById("contact-search");
  var box = document.getElementById("q");
  var results = document.getElementById("results");
  if (form && box && results) {
    var timer = null;
    var pending = null;
    var last = box.value;

    var show = function (url) {
      if (pending) { pending.abort(); }
      pending = new AbortController();
      results.classList.add("searching");
      results.setAttribute("aria-busy", "true");
      fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin", signal: pending.signal })
        .then(function (answer) {
          if (answer.redirected || !(answer.headers.get("content-type") || "").startsWith("text/html")) {
            throw new Error("not the page");
          }
          return answer.text();
        })
        .then(function (html) {
          var page = new DOMParser().parseFromString(html, "text/html");
          var fresh = page.getElementById("results");
          if (!fresh) { throw new Error("no results"); }
          results.replaceChildren.apply(results, Array.prototype.slice.call(fresh.childNodes));
          results.classList.remove("searching");
          results.removeAttribute("aria-busy");
          window.history.replaceState(null, "", url);
          if (page.title) { document.title = page.title; }
        })
        .catch(function (error) {
          if (error && error.name === "AbortError") { return; }
          form.submit(); // let the page itself answer (a sign-in page, an error page)
        });
    };

    box.addEventListener("input", function () {
      var text = box.value;
      if (text === last) { return; }
      last = text;
      window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        show(text.trim() ? "/contacts?" + new URLSearchParams({ q: text }).toString() : "/contacts");
      }, 300);
    });
    form.addEventListener("submit", function () { window.clearTimeout(timer); });
  }

  var upload = document.querySelector("form.import");
  var file = document.getElementById("file");
  var tooBig = document.getElementById("file-too-big");
  if (upload && file && tooBig) {
    var limit = parseInt(upload.getAttribute("data-max-bytes") || "0", 10);
    var check = function () {
      var chosen = file.files && file.files[0];
      var over = Boolean(chosen && limit && chosen.size > limit - 4096); // the form's own bytes count too
      tooBig.hidden = !over;
      return !over;
    };
    file.addEventListener("change", check);
    upload.addEventListener("submit", function (event) {
      if (!check()) { event.preventDefault(); file.focus(); }
    });
  }
})();
