/* Web workers for a site opened from disk (file://), so its search works without a server.
 *
 * mkdocs-material runs its search in a Web Worker, and browsers refuse `new Worker(url)` on a
 * page opened from disk. On such a page only, this replaces `Worker` with a hidden iframe of the
 * same origin that loads the worker's script and exchanges messages with the page the way a
 * worker does (each message a structured copy, delivered asynchronously). Over http(s) it does
 * nothing: the browser's own Worker runs the search.
 *
 * Its file name contains "iframe-worker" on purpose: mkdocs-material's offline plugin then adds
 * no polyfill of its own (its default is loaded from a CDN, which an offline reader cannot reach).
 * Written for this project; loaded in <head> through `extra.polyfills` by generator/render/site.py.
 */
(function () {
  "use strict";
  if (typeof window === "undefined" || window.location.protocol !== "file:") return;

  class FrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this.onerror = null;
      this._pending = [];  // messages posted before the worker's script has run
      this._ready = false;
      const frame = document.createElement("iframe");
      frame.setAttribute("aria-hidden", "true");
      frame.tabIndex = -1;
      frame.style.display = "none";
      (document.body || document.documentElement).appendChild(frame);
      this._frame = frame;
      const scope = frame.contentWindow;
      const worker = this;
      // The worker's own postMessage and importScripts, seen as globals by its script.
      scope.postMessage = function (data) {
        const copy = window.structuredClone(data);
        window.setTimeout(function () { worker._deliver(copy); }, 0);
      };
      scope.importScripts = function () {
        throw new Error("importScripts is not available to a worker of a page opened from disk");
      };
      scope.addEventListener("error", function (event) {
        worker._fail(event.message || "error in the worker's script");
      });
      const script = scope.document.createElement("script");
      script.src = new URL(String(url), window.location.href).href;
      script.onload = function () {
        worker._ready = true;
        worker._pending.splice(0).forEach(function (data) { worker._send(data); });
      };
      script.onerror = function () { worker._fail("the worker's script did not load: " + script.src); };
      scope.document.head.appendChild(script);
    }

    postMessage(data) {
      if (!this._frame) return;  // terminated, as a real worker would: silently
      if (this._ready) this._send(data); else this._pending.push(data);
    }

    terminate() {
      if (this._frame) this._frame.remove();
      this._frame = null;
      this._pending = [];
    }

    _send(data) {
      const scope = this._frame && this._frame.contentWindow;
      if (!scope) return;
      const copy = scope.structuredClone(data);  // a copy made in the worker's realm
      window.setTimeout(function () {
        scope.dispatchEvent(new scope.MessageEvent("message", { data: copy }));
      }, 0);
    }

    _deliver(data) {
      if (!this._frame) return;
      const event = new MessageEvent("message", { data: data });
      this.dispatchEvent(event);
      if (typeof this.onmessage === "function") this.onmessage(event);
    }

    _fail(message) {
      const event = new ErrorEvent("error", { message: message });
      this.dispatchEvent(event);
      if (typeof this.onerror === "function") this.onerror(event);
    }
  }

  window.Worker = FrameWorker;
})();
