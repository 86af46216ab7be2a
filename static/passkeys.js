// Passkeys in the browser: adding one (security page), signing in with one alone (login page,
// by button or from the email field's autofill), and using one as a second factor (/login/mfa)
// or to confirm it's you (/reauth).
//
// Each place is an element carrying data-passkey="register|sign-in|second-factor|reauth",
// data-options and data-answer (the server's two endpoints) and data-next; it holds a button
// [data-passkey-start], an error line [data-passkey-error] and, to add one, a name field
// [data-passkey-name]. The element stays hidden where the browser has no WebAuthn.
//
// The server keeps each ceremony's state; the browser gets the WebAuthn options and a token
// naming the ceremony, and sends the token back with its answer. Binary fields travel as
// base64url, as webauthn-rs reads and writes them; the conversion is done here by hand because
// PublicKeyCredential.parseCreationOptionsFromJSON and toJSON are not in every browser yet.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";

  function toBytes(base64url) {
    var base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeCredentials(list) {
    (list || []).forEach(function (credential) {
      credential.id = toBytes(credential.id);
    });
  }

  function creationOptions(options) {
    var publicKey = options.publicKey;
    publicKey.challenge = toBytes(publicKey.challenge);
    publicKey.user.id = toBytes(publicKey.user.id);
    decodeCredentials(publicKey.excludeCredentials);
    return { publicKey: publicKey };
  }

  function requestOptions(options) {
    var publicKey = options.publicKey;
    publicKey.challenge = toBytes(publicKey.challenge);
    decodeCredentials(publicKey.allowCredentials);
    return { publicKey: publicKey };
  }

  // A credential as webauthn-rs reads it, with `response`'s binary fields in base64url.
  function credentialJSON(credential, response) {
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: response,
      extensions: credential.getClientExtensionResults(),
    };
  }

  function registration(credential) {
    var response = credential.response;
    return credentialJSON(credential, {
      attestationObject: toBase64url(response.attestationObject),
      clientDataJSON: toBase64url(response.clientDataJSON),
      transports: typeof response.getTransports === "function" ? response.getTransports() : undefined,
    });
  }

  function assertion(credential) {
    var response = credential.response;
    return credentialJSON(credential, {
      authenticatorData: toBase64url(response.authenticatorData),
      clientDataJSON: toBase64url(response.clientDataJSON),
      signature: toBase64url(response.signature),
      userHandle: response.userHandle ? toBase64url(response.userHandle) : null,
    });
  }

  // POSTs JSON; resolves to { status, body } (body: the JSON answer, or {} for an HTML one).
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response
        .json()
        .catch(function () {
          return {};
        })
        .then(function (json) {
          return { status: response.status, body: json || {} };
        });
    });
  }

  function Place(element) {
    this.element = element;
    this.kind = element.dataset.passkey;
    this.button = element.querySelector("[data-passkey-start]");
    this.error = element.querySelector("[data-passkey-error]");
    this.name = element.querySelector("[data-passkey-name]");
  }

  Place.prototype.show = function (message) {
    if (!this.error) return;
    this.error.textContent = message || "";
    this.error.hidden = !message;
  };

  // Follows an answer: a redirect (re-authentication first, when the server asks for it), or
  // its error in words.
  Place.prototype.follow = function (answer) {
    if (answer.body.redirect) {
      location.assign(answer.body.redirect);
      return true;
    }
    if (answer.status === 401 && answer.body.reauth) {
      location.assign(answer.body.reauth);
      return true;
    }
    if (answer.status === 403) {
      this.show("This page is out of date. Reload it and try again.");
      return true;
    }
    if (answer.status >= 400) {
      this.show(answer.body.error || "Something went wrong (" + answer.status + "). Try again.");
      return true;
    }
    return false;
  };

  Place.prototype.answerBody = function (ceremony, credential) {
    var body = { ceremony: ceremony, credential: credential, next: this.element.dataset.next || "" };
    if (this.kind === "register") body.name = this.name ? this.name.value : "";
    if (this.kind === "sign-in") {
      var remember = document.getElementById("remember");
      body.remember = !!(remember && remember.checked);
    }
    return body;
  };

  // One ceremony: the server's options, the browser's passkey dialog, the server's verdict.
  // `mediation` "conditional" waits in the email field's autofill instead of a dialog.
  Place.prototype.run = function (mediation, signal) {
    var place = this;
    place.show("");
    return post(place.element.dataset.options).then(function (answer) {
      if (place.follow(answer)) return;
      var options = answer.body.options;
      var ceremony = answer.body.ceremony;
      var asked;
      if (place.kind === "register") {
        asked = navigator.credentials.create(creationOptions(options)).then(registration);
      } else {
        var request = requestOptions(options);
        if (mediation) request.mediation = mediation;
        if (signal) request.signal = signal;
        asked = navigator.credentials.get(request).then(assertion);
      }
      return asked.then(
        function (credential) {
          return post(place.element.dataset.answer, place.answerBody(ceremony, credential)).then(function (verdict) {
            place.follow(verdict);
          });
        },
        function (error) {
          // An autofill offer that was aborted or not taken is no failure.
          if (mediation === "conditional" || (error && error.name === "AbortError")) return;
          place.show(
            error && error.name === "InvalidStateError"
              ? "That passkey is already registered."
              : "No passkey was used. Try again, or use another way."
          );
        }
      );
    });
  };

  document.querySelectorAll("[data-passkey]").forEach(function (element) {
    var place = new Place(element);
    if (!place.button) return;
    element.hidden = false;
    var waiting = null; // the autofill request, aborted before a dialog opens

    place.button.addEventListener("click", function () {
      if (waiting) waiting.abort();
      waiting = null;
      place.button.disabled = true;
      place
        .run(null, null)
        .catch(function () {
          place.show("Could not reach the site. Try again.");
        })
        .then(function () {
          place.button.disabled = false;
        });
    });

    // On the login page, offer passkeys in the email field's autofill too, from the moment
    // the field is focused (a ceremony begins on the server only for someone about to log in).
    var email = document.getElementById("email");
    if (place.kind === "sign-in" && email && typeof PublicKeyCredential.isConditionalMediationAvailable === "function") {
      email.addEventListener(
        "focus",
        function () {
          PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
            if (!available || !window.AbortController || waiting) return;
            waiting = new AbortController();
            place.run("conditional", waiting.signal).catch(function () {});
          });
        },
        { once: true }
      );
    }
  });
})();
