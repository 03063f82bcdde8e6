/* The instance page's live timeline: follows /instances/{id}/events (Server-Sent Events) from the last event the
   page shows, appends each new event to the list, and updates the status, the step, the buttons that apply and
   the drawing. Text is only ever set with textContent: nothing an event carries becomes markup. Without this
   script the page is complete as it loaded. */
(function () {
  "use strict";
  var list = document.getElementById("timeline");
  if (!list || !list.getAttribute("data-stream") || typeof window.EventSource !== "function") {
    return;
  }
  var note = document.getElementById("live-note");
  var statusBadge = document.getElementById("instance-status");
  var node = document.getElementById("instance-node");
  var diagram = document.getElementById("instance-diagram");
  var after = list.getAttribute("data-after");
  var url = list.getAttribute("data-stream") + (after ? "?after=" + encodeURIComponent(after) : "");
  var shownNode = node ? node.getAttribute("data-node") || "" : "";

  function say(text) {
    if (note) {
      note.hidden = false;
      note.textContent = text;
    }
  }

  function seen(sequence) {
    var items = list.children;
    for (var i = items.length - 1; i >= 0 && i >= items.length - 50; i--) {
      if (items[i].getAttribute("data-seq") === String(sequence)) {
        return true;
      }
    }
    return false;
  }

  function line(className, text) {
    var p = document.createElement("p");
    p.className = className;
    p.textContent = text;
    return p;
  }

  function append(event) {
    if (event.sequence !== null && seen(event.sequence)) {
      return;
    }
    var item = document.createElement("li");
    item.setAttribute("data-seq", String(event.sequence));
    item.setAttribute("data-type", event.type);
    item.className = "fresh";
    item.appendChild(line("what", event.message));
    var meta = line("meta", "");
    var time = document.createElement("time");
    time.setAttribute("datetime", event.iso);
    time.textContent = event.when;
    meta.appendChild(time);
    var rest = (event.node ? " \u00b7 " + event.node : "") + " \u00b7 by " + event.actor;
    meta.appendChild(document.createTextNode(rest));
    item.appendChild(meta);
    list.appendChild(item);
  }

  function update(instance) {
    if (statusBadge) {
      statusBadge.textContent = instance.status_word;
      statusBadge.className = "status status-" + instance.status;
    }
    if (node) {
      node.textContent = instance.where;
      node.setAttribute("data-node", instance.current_node || "");
    }
    var forms = document.querySelectorAll("[data-when]");
    for (var i = 0; i < forms.length; i++) {
      var statuses = (forms[i].getAttribute("data-when") || "").split(" ");
      forms[i].hidden = statuses.indexOf(instance.status) < 0;
    }
    if (diagram && (instance.current_node || "") !== shownNode) {
      shownNode = instance.current_node || "";
      diagram.src = diagram.getAttribute("data-src") + "?v=" + encodeURIComponent(String(Date.now()));
    }
  }

  var source = new EventSource(url);
  source.addEventListener("open", function () {
    say("Live: new events appear here as they happen.");
  });
  source.addEventListener("error", function () {
    say(source.readyState === EventSource.CLOSED
      ? "Live updates stopped. Reload the page to see new events."
      : "Live updates paused: reconnecting\u2026");
  });
  source.addEventListener("timeline", function (message) {
    var body;
    try {
      body = JSON.parse(message.data);
    } catch (ignored) {
      return;
    }
    append(body.event);
    update(body.instance);
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
