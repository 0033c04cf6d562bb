var VERSION = "0.2.0";
var CALLER = "polysocketjs-" + VERSION;

var CONNECTING = 0;
var OPEN = 1;
var CLOSING = 2;
var CLOSED = 3;

var MAX_URL = 2000;        // total URL length for GET requests (old IE: 2083)
var URL_SLACK = 24;        // room for the longest seq number and rounding
var MAX_SEND_ATTEMPTS = 8; // per request, then the socket fails
var MAX_SEQ_SPAN = 1000;   // sends in flight span fewer seqs than the relay holds ahead (1024)
var DEFAULT_IDLE = 60000;  // the relay's idle timeout when its connect answer does not say
var PRELOAD_POLL_GAP = 250; // JSONP before the page's load event: short polls this far apart
var STREAM_ACK_CHARS = 32768; // messages a stream delivers unacknowledged before it is renewed
