// -------------- sending

// OPEN and CLOSING send; other states send nothing (more).
Relay.prototype.sending = function () {
    return this.state === RelayState.OPEN || this.state === RelayState.CLOSING;
};

Relay.prototype.send = function (item) {
    this.socket._addBuffered(item.size);
    this.queue.push(item);
    this.pump();
};

// A reason without a code is sent with 1000; neither: a close frame with no status.
Relay.prototype.close = function (code, reason) {
    this.closeReq = { code: code === undefined && reason !== undefined ? 1000 : code, reason: reason || "" };
    this.enter(RelayState.CLOSING);
    this.pump();
};

// Cut queued messages into frames (assigning seqs in order) and start send requests while there
// are free slots. While requests are in flight, what queues up leaves together in the next
// one. A Blob is read first; later messages wait for it, to keep the order.
Relay.prototype.pump = function () {
    var item;
    var frames;
    var n;
    var oldest;
    if (this.state === RelayState.STOPPED) {
        return;
    }
    while (this.inflight.length < this.opts.maxInflight && this.sending()) {
        while (this.queue.length && !this.reading && this.pending.length < this.opts.maxBatch) {
            item = this.queue[0];
            if (item.blob) {
                this.readBlob(item);
                break;
            }
            this.queue.shift();
            this.cut(item);
        }
        if (!this.pending.length) {
            break;
        }
        // Keep the seqs in flight within what the relay holds ahead of a missing one.
        oldest = this.pending[0].seq;
        for (n = 0; n < this.inflight.length; n++) {
            oldest = Math.min(oldest, this.inflight[n].frames[0].seq);
        }
        frames = [];
        for (n = 0; n < this.pending.length && this.pending[n].seq - oldest < MAX_SEQ_SPAN; n++) {
            frames.push(this.pending[n]);
        }
        if (!frames.length) {
            break;
        }
        this.start({ frames: frames, attempts: 0, count: 0 });
    }
    if (this.closeReq && (this.state === RelayState.REFUSED || (this.state === RelayState.CLOSING &&
            !this.queue.length && !this.pending.length && !this.inflight.length && !this.reading))) {
        this.enter(RelayState.CLOSE_SENT);
        this.sendClose(0);
    }
};

Relay.prototype.readBlob = function (item) {
    var self = this;
    var reader;
    if (!hasFileReader) {
        item.blob = null;
        item.bytes = [];
        return;
    }
    this.reading = true;
    reader = new FileReader();
    reader.onload = function () {
        self.reading = false;
        item.bytes = new Uint8Array(reader.result);
        item.blob = null;
        self.pump();
    };
    reader.onerror = function () {
        self.reading = false;
        self.stop();
        // As a browser that cannot read a Blob it was given: fail the connection.
        self.socket._fail("could not read a Blob to send");
    };
    reader.readAsArrayBuffer(item.blob);
};

Relay.prototype.cut = function (item) {
    var chunks = this.transport.split(this, item);
    var i;
    for (i = 0; i < chunks.length; i++) {
        chunks[i].seq = this.nextSeq++;
        chunks[i].fin = i === chunks.length - 1 ? 1 : 0;
        chunks[i].size = chunks[i].fin ? item.size : 0;
        this.pending.push(chunks[i]);
    }
};

// One send request: req.frames are candidates; the transport takes the first req.count of
// them (decided once: a retry carries exactly the same frames, so the relay drops what it
// already has).
Relay.prototype.start = function (req) {
    var self = this;
    var i;
    var k;
    this.inflight.push(req);
    req.attempts++;
    function answered(err, data) {
        if (err && !self.reached) {
            self.unreachable("a send", err);
            return;
        }
        if (err) {
            if (req.attempts >= MAX_SEND_ATTEMPTS) {
                self.gone("send failed: " + err.message);
                return;
            }
            // Retry with the same seqs: the relay drops what got through the first time.
            later(function () {
                if (self.sending()) {
                    self.removeInflight(req);
                    self.start(req);
                }
            }, Math.min(200 * Math.pow(2, req.attempts - 1), 4000));
            return;
        }
        self.removeInflight(req);
        if (!data.ok) {
            self.sendRefused(data);
            return;
        }
        for (k = 0; k < req.count; k++) {
            if (req.frames[k].size) {
                self.socket._addBuffered(-req.frames[k].size);
            }
        }
        self.pump();
    }
    if (req.attempts === 1) {
        req.count = this.transport.sendFrames(this, req.frames, answered);
        req.frames = req.frames.slice(0, req.count);
        for (i = 0; i < req.count; i++) {
            this.pending.shift();
        }
    } else {
        this.transport.sendFrames(this, req.frames, answered);
    }
};

Relay.prototype.removeInflight = function (req) {
    var i;
    for (i = 0; i < this.inflight.length; i++) {
        if (this.inflight[i] === req) {
            this.inflight.splice(i, 1);
            return;
        }
    }
};

// The relay refused a send: the socket is closing or failed. The final close arrives by the receiver.
Relay.prototype.sendRefused = function (data) {
    this.enter(RelayState.REFUSED);
    this.queue = [];
    this.pending = [];
    if (data.error === "unknown_socket") {
        this.gone(data.error + ": " + data.message);
        return;
    }
    this.pump();
};

Relay.prototype.sendClose = function (attempt) {
    var self = this;
    var params = { socket: this.id };
    if (this.closeReq.code !== undefined) {
        params.code = this.closeReq.code;
        params.reason = this.closeReq.reason;
    }
    this.request(this.base + "/close", params, this.opts.sendTimeout, function (err, data) {
        if (err && !self.reached) {
            self.unreachable("a close", err);
            return;
        }
        if (err && attempt < 4) {
            later(function () {
                self.sendClose(attempt + 1);
            }, 300 * (attempt + 1));
            return;
        }
        if (!err && !data.ok && data.error === "unknown_socket") {
            self.gone(data.error + ": " + data.message);
        }
        // otherwise the poll delivers the final close
    });
};
