// -------------- receiving

// The first receiver the `receive` option lists that this transport and browser can use.
Relay.prototype.chooseReceive = function () {
    this.receiver = chooseReceiver(this);
    if (this.receiver.kind === "stream" &&
            networkVerdicts.skips(streamsVerdictKey(this.router), rememberOf(this.opts))) {
        this.receiver = POLL_RECEIVER;  // streams were buffered on this network lately
    }
    put(this.socket, "receiving", this.receiver.kind);
};

// The ack a send carries (undefined: none), where the receiver wants sends to carry it.
Relay.prototype.sendAck = function () {
    if (!this.receiver.acksBySend || this.lastSeq < 0) {
        return undefined;
    }
    this.unacked = 0;
    return this.lastSeq;
};

// For the rest of the socket's life: a buffering proxy (no first byte in time), or an error that
// only a poll's answer shows (EventSource sees an error answer as a bare error event).
Relay.prototype.fallBack = function () {
    this.dropStream();
    this.receiver = POLL_RECEIVER;
    put(this.socket, "receiving", POLL_RECEIVER.kind);
    POLL_RECEIVER.start(this);
};

// One GET /stream at a time. Its timer: before the first byte, streamTimeout (then fall back);
// after it, the receiver's quiet limit. A stream that is no longer the socket's receiver (it fell
// back to polling meanwhile) is not reopened.
Relay.prototype.openStream = function (receiver) {
    var self = this;
    var st = { receiver: receiver, got: false, beats: 0, timer: null, handle: null, done: false, last: now() };
    var url = this.base + "/stream";
    var params = { socket: this.id, ack: this.lastSeq, ttl: this.ttl };
    if (this.state === RelayState.STOPPED || this.stream || this.receiver !== receiver) {
        return;
    }
    this.stream = st;
    this.unacked = 0;

    // One timer, not one per message: it checks the time since the stream's last byte
    // (st.last) against the limit that applies now, and re-arms itself for the rest.
    function check() {
        var limit = { why: "timeout", ms: self.opts.streamTimeout };
        var quiet = now() - st.last;
        st.timer = null;
        if (st.done) {
            return;
        }
        if (st.got) {
            limit = receiver.quiet(self);
        }
        if (quiet >= limit.ms) {
            self.endStream(st, limit.why);
        } else {
            st.timer = later(check, limit.ms - quiet);
        }
    }

    // beat: a message or a heartbeat (not the stream's opening)
    function bytes(beat) {
        if (st.done) {
            return;
        }
        st.got = true;
        self.reached = true;
        if (!self.streamWorked) {
            networkVerdicts.worked(streamsVerdictKey(self.router), rememberOf(self.opts));
        }
        self.streamWorked = true;
        self.streamFailed = 0;
        if (beat) {
            st.beats++;
            self.streamSilent = 0;
        }
        st.last = now();
        self.alive();
    }

    function message(text) {
        var m = null;
        if (st.done) {
            return;
        }
        bytes(true);
        try {
            m = parseJson(text);
        } catch (e) {}
        if (m && typeof m === "object") {
            self.deliver([m]);
        }
        // Nothing sent meanwhile carried an ack: renew the stream, whose request carries it,
        // before the relay's back-pressure bound stops the flow (--buffer-bytes, 1 MiB by default).
        self.unacked += text.length;
        if (self.unacked > STREAM_ACK_CHARS) {
            self.endStream(st, "ack");
        }
    }

    function ended() {
        self.endStream(st, "end");
    }

    st.timer = later(check, Math.min(this.opts.streamTimeout, this.ttl));
    st.handle = receiver.open(url, params, { bytes: bytes, message: message, ended: ended });
};

Relay.prototype.dropStream = function () {
    var st = this.stream;
    if (!st) {
        return;
    }
    this.stream = null;
    st.done = true;
    if (st.timer !== null) {
        clearTimeout(st.timer);
        st.timer = null;
    }
    if (st.handle) {
        st.handle.abort();
    }
};

// A stream ended (why: "end" by the relay or the network, "timeout" before its first byte,
// "silent", "renew", "ack"). Resumed with a new stream whose ack is the highest seq processed: the relay
// sends again every message not acknowledged, and deliver() drops those already seen.
Relay.prototype.endStream = function (st, why) {
    var self = this;
    var delay = 0;
    if (st.done || this.stream !== st) {
        return;
    }
    this.dropStream();
    if (this.state === RelayState.STOPPED) {
        return;
    }
    if (!st.got) {
        // No first byte in time: a buffering proxy. Failed before it: no stream path (or an
        // error answer), unless streams worked before (a blip, or the relay going away: a few
        // tries, then the polls show what it is).
        if (why === "timeout" && !this.streamWorked) {
            // held back whole, if a poll gets through (else the relay host is what fails)
            this.streamHeldBack = true;
        }
        if (why === "timeout" || !this.streamWorked || ++this.streamFailed >= 3) {
            this.fallBack();
            return;
        }
        later(function () {
            self.openStream(st.receiver);
        }, 100 * Math.pow(2, this.streamFailed - 1));
        return;
    }
    if (why === "silent" && ++this.streamSilent >= 2) {
        this.fallBack();
        return;
    }
    if (why === "end" && !st.beats) {
        // ended with nothing but its opening: do not spin if that keeps happening
        this.streamEmpty++;
        delay = this.streamEmpty > 1 ? Math.min(100 * Math.pow(2, this.streamEmpty - 2), 5000) : 0;
    } else {
        this.streamEmpty = 0;
    }
    if (delay) {
        later(function () {
            self.openStream(st.receiver);
        }, delay);
    } else {
        this.openStream(st.receiver);
    }
};

// Until the relay host has answered once, a poll is a probe: answered at once (ttl 0) and given
// sendTimeout, as one request; if it fails, the host is unreachable (a filter refuses its name) and
// the socket ends.
Relay.prototype.poll = function () {
    var self = this;
    var probe = !this.reached;
    var ttl = probe ? 0 : this.transport.pollTtl(this);
    if (this.state === RelayState.STOPPED || this.polling) {
        return;
    }
    this.polling = true;
    this.request(this.base + "/poll", { socket: this.id, ttl: ttl, ack: this.lastSeq },
        probe ? this.opts.sendTimeout : ttl + this.opts.pollSlack, function (err, data) {
            self.polling = false;
            if (err && !self.reached) {
                self.unreachable("a poll", err);
                return;
            }
            if (err) {
                self.pollFailed();
                return;
            }
            if (!data.ok) {
                if (data.error === "unknown_socket" || data.error === "bad_request") {
                    self.gone(data.error + ": " + data.message);
                } else {
                    self.pollFailed();
                }
                return;
            }
            self.pollFailures = 0;
            if (self.streamHeldBack) {
                // a poll passes where the stream did not: later sockets of this router poll from the start
                self.streamHeldBack = false;
                networkVerdicts.failed(streamsVerdictKey(self.router), rememberOf(self.opts));
            }
            self.deliver(data.messages || []);
            if (self.state !== RelayState.STOPPED) {
                var gap = self.transport.pollGap ? self.transport.pollGap() : 0;
                if (gap) {
                    later(function () { self.poll(); }, gap);
                } else {
                    self.poll();
                }
            }
        });
};

// Retried with backoff until the relay answers again or the idle watchdog gives up.
Relay.prototype.pollFailed = function () {
    var self = this;
    this.pollFailures++;
    later(function () {
        self.poll();
    }, Math.min(100 * Math.pow(2, this.pollFailures - 1), 5000));
};

// The relay host never answered and a request there failed: the network refuses that name (a
// filter) or cannot reach it. Nothing comes of retrying: the socket is lost at once (close 1006)
// instead of after the idle timeout, and a close() waiting on it ends with it.
Relay.prototype.unreachable = function (what, err) {
    this.gone("the relay host " + this.base + " did not answer " + what + " (" +
        (err ? err.error + ": " + err.message : "no answer") + ")");
};

// The relay no longer has the socket (or cannot be reached): the connection is lost.
Relay.prototype.gone = function (message) {
    this.stop();
    this.socket._lost(message);
};

Relay.prototype.deliver = function (messages) {
    var sock = this.socket;
    var i;
    var m;
    for (i = 0; i < messages.length; i++) {
        m = messages[i];
        if (this.state === RelayState.STOPPED) {
            return;
        }
        if (!m || m.type === "heartbeat" || typeof m.seq !== "number" || m.seq <= this.lastSeq) {
            continue;
        }
        this.lastSeq = m.seq;
        if (m.type === "close") {
            this.finish(m.code, m.reason);
            return;
        }
        if (sock._readyState !== OPEN) {
            continue; // CLOSING: messages are dropped, as by a native socket
        }
        if (m.type === "text") {
            sock._emitMessage(m.data);
        } else if (m.type === "binary") {
            sock._emitMessage(sock._binary(base64Decode(m.data || "")));
        }
    }
};

Relay.prototype.finish = function (code, reason) {
    var ack = { socket: this.id, ttl: 0, ack: this.lastSeq };
    this.stop();
    // Acknowledge the close so the relay frees the socket at once; the answer does not matter.
    this.transport.request(this.base + "/poll", ack, this.opts.sendTimeout, noop);
    code = typeof code === "number" ? code : CLOSE_NO_STATUS;
    // 1006: the target's connection ended without a closing handshake; a browser fires close alone.
    this.socket._closed(code, reason || "", code !== CLOSE_ABNORMAL, false);
};
