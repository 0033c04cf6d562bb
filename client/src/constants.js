var VERSION = "0.2.0";
var CALLER = "polysocketjs-" + VERSION;

var CONNECTING = 0;
var OPEN = 1;
var CLOSING = 2;
var CLOSED = 3;

// Shared with the relay, from src/relay-constants.json (tests/unit/test_client_constants.py): sends in
// flight span fewer seqs than the relay holds ahead of a missing one (MAX_SEQ_SPAN); the relay's
// default poll wait and idle timeout (when its connect answer does not say); close codes.
//@relay-constants

var MAX_URL = 2000;        // total URL length for GET requests (old IE: 2083)
var URL_SLACK = 24;        // room for the longest seq number and rounding
var MAX_SEND_ATTEMPTS = 8; // per request, then the socket fails
var PRELOAD_POLL_GAP = 250; // JSONP before the page's load event: short polls this far apart
var STREAM_ACK_CHARS = 32768; // messages a stream delivers unacknowledged before it is renewed
