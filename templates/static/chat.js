// The one script: local times, sending without reloading (retry-safe: the message id is chosen
// here and kept across retries), live updates over server-sent events, and a "reconnecting"
// notice while the cluster fails over. Messages are inserted as text, never as HTML.
"use strict";

(function () {
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.content : "";
  var connection = document.getElementById("connection");

  function showReconnecting(on) {
    if (connection) connection.hidden = !on;
  }

  function localTime(el) {
    var when = new Date(el.getAttribute("datetime"));
    if (isNaN(when)) return;
    var today = new Date().toDateString() === when.toDateString();
    el.textContent = today
      ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : when.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    el.title = when.toLocaleString();
  }

  // A UUIDv7 (48 bits of unix milliseconds, then random): time-ordered ids keep the
  // server's message index growing at its right edge.
  function newId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    var millis = Date.now();
    for (var i = 5; i >= 0; i--) {
      bytes[i] = millis % 256;
      millis = Math.floor(millis / 256);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  document.querySelectorAll("time[datetime]").forEach(localTime);

  // Forms that destroy something ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // A "reconnecting" error page retries by itself.
  var problem = document.querySelector("[data-retry-after]");
  if (problem) {
    showReconnecting(true);
    setTimeout(function () { location.reload(); }, 1000 * Math.max(1, +problem.getAttribute("data-retry-after")));
  }

  var chat = document.querySelector(".chat[data-chat-id]");
  var chatList = document.getElementById("chat-list");
  var epoch = 0;
  document.querySelectorAll("[data-epoch]").forEach(function (el) {
    epoch = Math.max(epoch, +el.getAttribute("data-epoch") || 0);
  });

  // Inserts a message in epoch order (the stream, a send's answer and a reload may deliver
  // them in any order); one already shown is left alone, so nothing is shown twice.
  function appendMessage(message) {
    var list = document.getElementById("messages");
    if (!list || list.querySelector('[data-id="' + message.id + '"]')) return;
    var item = document.createElement("li");
    item.className = "message" + (message.sender.id === chat.getAttribute("data-me") ? " mine" : "");
    item.setAttribute("data-id", message.id);
    item.setAttribute("data-epoch", message.epoch);
    var author = document.createElement("span");
    author.className = "author";
    author.textContent = message.sender.username + "#" + message.sender.tag;
    var content = document.createElement("p");
    content.className = "content";
    content.textContent = message.content;
    var time = document.createElement("time");
    time.setAttribute("datetime", message.created_at);
    localTime(time);
    item.append(author, content, time);
    var after = null;
    for (var node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (+node.getAttribute("data-epoch") <= message.epoch) { after = node; break; }
    }
    list.insertBefore(item, after ? after.nextSibling : list.firstChild);
    var empty = chat.querySelector(".empty");
    if (empty) empty.remove();
    if (!item.nextElementSibling) item.scrollIntoView({ block: "end" });
  }

  function seen(newEpoch) {
    epoch = Math.max(epoch, newEpoch || 0);
  }

  // Reloads the newest page of the chat (after the stream said it cannot tell what was missed).
  function reloadChat() {
    return fetch(chat.getAttribute("data-api"), {
      headers: { "Chat-Epoch": String(epoch) }, credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) throw new Error(response.status);
      return response.json();
    }).then(function (page) {
      page.messages.forEach(appendMessage);
      seen(page.epoch);
    });
  }

  // The reader's position in the open chat: the server moved it when the page was shown;
  // messages the stream brings are marked read while the tab is visible (one small POST per
  // burst, after the reader could see them), so the home page's unread counts stay true.
  var readEpoch = chat ? +chat.getAttribute("data-read-epoch") || 0 : 0;
  var unreadThrough = 0;
  var marking = null;
  function markRead() {
    if (marking || unreadThrough <= readEpoch || document.visibilityState !== "visible") return;
    marking = setTimeout(function () {
      var through = unreadThrough;
      fetch("/api/chats/" + encodeURIComponent(chat.getAttribute("data-chat-id")) + "/read", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Chat-Epoch": String(epoch) },
        body: JSON.stringify({ epoch: through })
      }).then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.json();
      }).then(function (body) {
        readEpoch = Math.max(readEpoch, body.read_epoch);
      }).catch(function () {
        // Busy or failing over: the next message or the next view moves it.
      }).then(function () {
        marking = null;
        markRead();
      });
    }, 500);
  }
  document.addEventListener("visibilitychange", markRead);

  if (chat) {
    // A chat opens at its newest message.
    var newest = document.querySelector("#messages li:last-child");
    if (newest) newest.scrollIntoView({ block: "end" });
    var form = document.getElementById("send");
    var textarea = document.getElementById("content");
    var errorLine = document.getElementById("send-error");
    var pending = null; // { id, content }: kept until the server has it, so a retry reuses the id
    var sending = false;
    textarea.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      // One message at a time: the one in flight keeps its id until the server has it, and
      // what is typed meanwhile stays in the box.
      if (sending) return;
      var content = textarea.value.trim();
      if (!content) return;
      if (!pending || pending.content !== content) pending = { id: newId(), content: content };
      send(pending);
    });

    async function send(message) {
      if (sending) return;
      sending = true;
      errorLine.hidden = true;
      form.querySelector("button").disabled = true;
      for (var attempt = 0; ; attempt++) {
        var response = null;
        try {
          response = await fetch(chat.getAttribute("data-api"), {
            method: "POST",
            credentials: "same-origin",
            headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Chat-Epoch": String(epoch) },
            body: JSON.stringify({ id: message.id, content: message.content })
          });
        } catch (networkError) {
          response = null;
        }
        if (response && (response.status === 200 || response.status === 201)) {
          var body = await response.json();
          showReconnecting(false);
          appendMessage(body.message);
          seen(body.message.epoch);
          if (textarea.value.trim() === message.content) textarea.value = "";
          pending = null;
          break;
        }
        if (response && response.status !== 503 && response.status !== 429) {
          var text = "Could not send.";
          try { text = (await response.json()).error.message; } catch (e) { /* keep the default */ }
          if (response.status === 401) { location.href = "/login"; return; }
          errorLine.textContent = text;
          errorLine.hidden = false;
          break;
        }
        // 503/429 or no answer: the cluster is failing over. Same id, so nothing is sent twice.
        showReconnecting(true);
        var wait = response ? +(response.headers.get("Retry-After") || 1) : 1;
        await sleep(1000 * Math.min(10, Math.max(1, wait)) + Math.min(attempt, 5) * 200);
      }
      form.querySelector("button").disabled = false;
      sending = false;
    }
  }

  // Live updates. The browser reconnects by itself after a dropped connection (sending
  // Last-Event-ID), but gives up for good on an HTTP error such as the 503 an input node answers
  // while the cluster fails over: then a new stream is opened here, resuming after the newest
  // epoch seen. After any reconnection the chat is read again, so a message whose notice was
  // lost in a failover still appears (once: messages are keyed by id).
  function onMessage(event) {
    var message = JSON.parse(event.data);
    seen(message.epoch);
    if (chat && message.chat_id === chat.getAttribute("data-chat-id")) {
      appendMessage(message);
      if (message.sender.id !== chat.getAttribute("data-me")) {
        unreadThrough = Math.max(unreadThrough, message.epoch);
        markRead();
      }
    } else if (chatList) {
      var card = chatList.querySelector('[data-chat-id="' + message.chat_id + '"]');
      if (!card || message.sender.id === chatList.getAttribute("data-me")) return;
      var badge = card.querySelector(".unread");
      var count = badge.querySelector(".count");
      count.textContent = String((+count.textContent || 0) + 1);
      badge.hidden = false;
      var text = card.querySelector(".preview .text");
      if (text) text.textContent = message.content;
    }
  }

  function catchUp() {
    if (chat) reloadChat().catch(function () { showReconnecting(true); });
  }

  var broken = false;
  function openStream(delay) {
    var source = new EventSource("/api/events?after=" + epoch, { withCredentials: true });
    source.addEventListener("open", function () {
      showReconnecting(false);
      if (broken) catchUp();
      broken = false;
      delay = 1000;
    });
    source.addEventListener("error", function () {
      broken = true;
      showReconnecting(true);
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(function () { openStream(Math.min(delay * 2, 10000)); }, delay);
      }
    });
    source.addEventListener("message", onMessage);
    source.addEventListener("reset", catchUp);
    // The session ended (logged out elsewhere, account deleted, expired): stop listening.
    source.addEventListener("ended", function () {
      source.close();
      window.location.assign("/login");
    });
  }

  if ((chat || chatList) && window.EventSource) openStream(1000);
})();
