// Type definitions for polysocket.js 0.2.0
// A W3C WebSocket for every browser: native where it works, JSONP / CORS long-polling through a
// polysocket relay where it does not.

declare class PolySocket {
    constructor(url: string, protocols?: string | string[] | null, options?: PolySocket.PolySocketOptions);
    constructor(url: string, options: PolySocket.PolySocketOptions);

    static readonly CONNECTING: 0;
    static readonly OPEN: 1;
    static readonly CLOSING: 2;
    static readonly CLOSED: 3;
    static readonly version: string;
    /** Options every new socket starts from. */
    static defaults: PolySocket.PolySocketOptions;
    /** What this browser has. */
    static readonly supports: PolySocket.PolySocketSupports;
    /** The browser's own WebSocket as found when the library loaded (null where there is none). */
    static readonly NativeWebSocket: typeof WebSocket | null;
    /**
     * Sets window.WebSocket = PolySocket where the browser has no WebSocket (or always, with
     * `{replace: true}`); true if it did. Run it before any script that keeps a reference to
     * WebSocket (a library bundle): those keep what they found.
     */
    static install(defaults?: PolySocket.PolySocketOptions, how?: { replace?: boolean }): boolean;
    /** True when install() ran after the page had loaded (it also warns on the console). */
    static readonly installedLate: boolean;

    readonly CONNECTING: 0;
    readonly OPEN: 1;
    readonly CLOSING: 2;
    readonly CLOSED: 3;

    readonly url: string;
    readonly readyState: 0 | 1 | 2 | 3;
    readonly protocol: string;
    readonly extensions: string;
    readonly bufferedAmount: number;
    binaryType: "blob" | "arraybuffer";
    /** The transport in use once open: "websocket", "xhr" or "jsonp" (not part of the W3C interface). */
    readonly transport: PolySocket.PolySocketTransport;
    /**
     * How a relay socket receives, once open: "stream" (one long GET /stream answered as
     * text/event-stream, read by EventSource or xhr-streaming) or "poll" (long-polling; JSONP always,
     * and an XHR socket whose stream did not get through). "" before open and with the native
     * WebSocket (not part of the W3C interface).
     */
    readonly receiving: PolySocket.PolySocketReceiving;
    /** Why the connection failed or was lost, when known ("" otherwise; not part of the W3C interface). */
    readonly lastError: string;

    onopen: ((this: PolySocket, ev: PolySocket.PolySocketEvent) => any) | null;
    onmessage: ((this: PolySocket, ev: PolySocket.PolySocketMessageEvent) => any) | null;
    onerror: ((this: PolySocket, ev: PolySocket.PolySocketErrorEvent) => any) | null;
    onclose: ((this: PolySocket, ev: PolySocket.PolySocketCloseEvent) => any) | null;

    send(data: string | ArrayBuffer | ArrayBufferView | Blob): void;
    close(code?: number, reason?: string): void;

    addEventListener<K extends keyof PolySocket.PolySocketEventMap>(type: K, listener: PolySocket.Listener<PolySocket.PolySocketEventMap[K]> | null, options?: boolean | PolySocket.ListenerOptions): void;
    addEventListener(type: string, listener: PolySocket.Listener<PolySocket.PolySocketEvent> | null, options?: boolean | PolySocket.ListenerOptions): void;
    removeEventListener<K extends keyof PolySocket.PolySocketEventMap>(type: K, listener: PolySocket.Listener<PolySocket.PolySocketEventMap[K]> | null, options?: boolean | { capture?: boolean }): void;
    removeEventListener(type: string, listener: PolySocket.Listener<PolySocket.PolySocketEvent> | null, options?: boolean | { capture?: boolean }): void;
    dispatchEvent(ev: PolySocket.PolySocketEvent | Event): boolean;
}

declare namespace PolySocket {
    /** How a socket reaches its target. */
    type PolySocketTransportOption = "auto" | "websocket" | "relay" | "xhr" | "jsonp";

    /** How a relay socket with the XHR transport may receive (the `receive` option). */
    type PolySocketReceiveOption = "auto" | "eventsource" | "xhr-streaming" | "poll";

    /** How a relay socket receives ("" until it is open, and with the native WebSocket). */
    type PolySocketReceiving = "" | "stream" | "poll";

    /** The transport a socket ended up using ("" until it is open). */
    type PolySocketTransport = "" | "websocket" | "xhr" | "jsonp";

    interface PolySocketOptions {
        /** Base URL of the polysocket router, e.g. "https://relay.example.com". Needed for the relay. */
        router?: string | null;
        /** Token for the router's admission control. */
        token?: string | null;
        /**
         * "auto" (default): the browser's WebSocket when it exists and opens, else the relay.
         * "websocket": only the browser's WebSocket. "relay": the relay with the best transport the
         * browser has (CORS XHR, else JSONP). "xhr" / "jsonp": the relay with that transport.
         */
        transport?: PolySocketTransportOption;
        /** ms a native WebSocket may take to open before "auto" falls back to the relay (default 8000; 0: no limit). */
        nativeTimeout?: number;
        /** ms to wait for the router's answer to /connect (default 30000). */
        connectTimeout?: number;
        /** ms to wait for one send / close request before retrying it (default 15000). */
        sendTimeout?: number;
        /** ms the relay holds a poll open when it has nothing to deliver (default 25000, relay caps it at 55000). */
        pollTtl?: number;
        /** extra ms to wait for a poll answer beyond pollTtl before giving up on it (default 15000). */
        pollSlack?: number;
        /**
         * How an XHR relay socket receives. "auto" (default): a stream, by EventSource where the
         * browser has a CORS-capable one, else by xhr-streaming, falling back to long-polling when
         * the stream does not get through. "eventsource" / "xhr-streaming": a stream read that way
         * only (polls where the browser lacks EventSource; still falls back). "poll": long-polling.
         * JSONP always polls.
         */
        receive?: PolySocketReceiveOption;
        /** ms for a stream's first byte; without it (a buffering proxy) the socket polls for the rest of its life (default 5000). */
        streamTimeout?: number;
        /**
         * Where what failed on this network is remembered so that later sockets skip it (a native upgrade that
         * failed, streams that were buffered): "session" (default: this page and sessionStorage, at most 10 min),
         * "page" (this page only), "none".
         */
        remember?: "session" | "page" | "none";
        /** concurrent send requests per socket (default 4). */
        maxInflight?: number;
        /** frames one send request may carry; what queues up while requests are in flight leaves together (default 256; 1: one request per frame). */
        maxBatch?: number;
        /** bytes of one POST /send body with the XHR transport (default 65536). */
        maxBody?: number;
        /** longest URL for a GET request with the JSONP transport (default 2000). */
        maxUrl?: number;
    }

    /** A DOM Event (MessageEvent, CloseEvent) where the browser constructs them, else a look-alike. */
    interface PolySocketEvent {
        readonly type: string;
        readonly target: PolySocket | null;
        readonly currentTarget: PolySocket | null;
        readonly eventPhase: number;
        readonly bubbles: boolean;
        readonly cancelable: boolean;
        readonly defaultPrevented: boolean;
        readonly isTrusted: boolean;
        readonly timeStamp: number;
        preventDefault(): void;
        stopPropagation(): void;
        stopImmediatePropagation(): void;
    }

    interface PolySocketMessageEvent extends PolySocketEvent {
        readonly type: "message";
        /** string for text; ArrayBuffer or Blob (per binaryType) for binary. */
        readonly data: any;
        readonly origin: string;
        readonly lastEventId: string;
    }

    interface PolySocketCloseEvent extends PolySocketEvent {
        readonly type: "close";
        readonly code: number;
        readonly reason: string;
        readonly wasClean: boolean;
    }

    /** A plain Event, as the browser's (the socket's lastError says what went wrong). */
    interface PolySocketErrorEvent extends PolySocketEvent {
        readonly type: "error";
    }

    interface PolySocketEventMap {
        open: PolySocketEvent;
        message: PolySocketMessageEvent;
        error: PolySocketErrorEvent;
        close: PolySocketCloseEvent;
    }

    type Listener<E> = ((this: PolySocket, ev: E) => any) | { handleEvent(ev: E): any };

    interface ListenerOptions {
        capture?: boolean;
        once?: boolean;
        passive?: boolean;
        signal?: AbortSignal;
    }

    interface PolySocketSupports {
        websocket: boolean;
        xhr: boolean;
        jsonp: boolean;
        /** an EventSource that can make CORS requests: streams are read with it */
        eventsource: boolean;
        arraybuffer: boolean;
        blob: boolean;
        /** a constructible EventTarget: the socket is one, and dispatch is the browser's */
        eventtarget: boolean;
        /** Event / MessageEvent / CloseEvent constructors: events are real DOM events */
        events: boolean;
        /** the WHATWG URL API, used to parse and normalise the socket's URL */
        url: boolean;
    }
}

export = PolySocket;
export as namespace PolySocket;
