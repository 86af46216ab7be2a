// Warns before the idle timeout: "Your session will expire in 1:59 — Stay signed in / Log out".
// The server is the authority: the page schedules itself from the remaining time it was
// rendered with, asks /session/status (which never extends the session) before acting, and
// "Stay signed in" posts to /session/extend. Tabs tell each other about extensions, so one
// tab's "Stay signed in" closes the warning in the others.
(function () {
  "use strict";
  var dialog = document.getElementById("session-timeout");
  if (!dialog || typeof dialog.showModal !== "function") return;

  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute("content") : "";
  var countdown = dialog.querySelector("[data-countdown]");
  var channel = "BroadcastChannel" in window ? new BroadcastChannel("latchkey-session") : null;
  var warnBefore = Number(dialog.dataset.warnBefore) || 120;
  var deadline = 0; // epoch milliseconds at which the session ends
  var wake = null;
  var tick = null;
  // setTimeout fires at once when asked to wait longer than 2^31 - 1 ms (24.8 days), as a
  // remembered login's 30 days would: wait at most a day, then ask the server again.
  var LONGEST_WAIT = 24 * 60 * 60 * 1000;

  function loginUrl() {
    return "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  function format(seconds) {
    seconds = Math.max(0, Math.ceil(seconds));
    var rest = seconds % 60;
    return Math.floor(seconds / 60) + ":" + (rest < 10 ? "0" : "") + rest;
  }

  function secondsLeft() {
    return (deadline - Date.now()) / 1000;
  }

  function apply(status) {
    if (!status.authenticated) {
      location.assign(loginUrl());
      return;
    }
    warnBefore = status.warn_before;
    // A remembered login has no idle deadline; the nearer of the two ends the session.
    var left = null;
    [status.idle_expires_in, status.absolute_expires_in].forEach(function (seconds) {
      if (typeof seconds === "number" && !isNaN(seconds)) left = left === null ? seconds : Math.min(left, seconds);
    });
    if (left === null) return;
    deadline = Date.now() + left * 1000;
    schedule();
  }

  function request(method, url) {
    var headers = { Accept: "application/json" };
    if (method === "POST") headers["X-CSRF-Token"] = token;
    return fetch(url, { method: method, credentials: "same-origin", headers: headers }).then(function (response) {
      if (response.status === 401 || response.status === 403) return { authenticated: false };
      if (!response.ok) throw new Error("session request failed: " + response.status);
      return response.json();
    });
  }

  function check() {
    return request("GET", "/session/status").then(apply, function () {
      // The server is unreachable: look again shortly rather than logging out.
      clearTimeout(wake);
      wake = setTimeout(check, 10000);
    });
  }

  function schedule() {
    clearTimeout(wake);
    var left = secondsLeft();
    if (left <= 0) {
      check();
    } else if (left <= warnBefore) {
      show();
    } else {
      hide();
      wake = setTimeout(check, Math.min((left - warnBefore) * 1000, LONGEST_WAIT));
    }
  }

  function show() {
    if (!dialog.open) {
      dialog.showModal();
      var stay = dialog.querySelector('[data-action="extend"]');
      if (stay) stay.focus();
    }
    update();
  }

  function hide() {
    clearTimeout(tick);
    if (dialog.open) dialog.close();
  }

  function update() {
    clearTimeout(tick);
    var left = secondsLeft();
    countdown.textContent = format(left);
    if (left <= 0) {
      check();
      return;
    }
    tick = setTimeout(update, 1000);
  }

  function extend() {
    request("POST", "/session/extend").then(function (status) {
      apply(status);
      if (channel) channel.postMessage("extended");
    }, check);
  }

  function logOut() {
    var form = document.querySelector('form[action="/logout"]');
    if (form) form.submit();
    else location.assign("/logout");
  }

  dialog.querySelector('[data-action="extend"]').addEventListener("click", extend);
  dialog.querySelector('[data-action="logout"]').addEventListener("click", logOut);
  // Escape would close the dialog without answering; treat it as "Stay signed in".
  dialog.addEventListener("cancel", function (event) {
    event.preventDefault();
    extend();
  });
  if (channel) channel.onmessage = check;
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") check();
  });

  var absolute = parseInt(dialog.dataset.absoluteExpiresIn, 10);
  var idle = parseInt(dialog.dataset.idleExpiresIn, 10);
  apply({
    authenticated: true,
    idle_expires_in: isNaN(idle) ? null : idle,
    absolute_expires_in: isNaN(absolute) ? null : absolute,
    warn_before: warnBefore,
  });
})();
