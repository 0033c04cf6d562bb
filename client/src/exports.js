// The pure helpers, for the unit tests under Node (tests/client_units/, run by test_es3.py); not an API.
PolySocket._util = {
    charBytes: charBytes, utf8Length: utf8Length, urlCost: urlCost, toUSV: toUSV,
    splitText: splitText, splitBase64: splitBase64, base64Encode: base64Encode,
    base64Decode: base64Decode, jsonString: jsonString, parseUrlByHand: parseUrlByHand,
    clampCode: clampCode, frameJson: frameJson, SseParser: SseParser
};

// The choices and the relay socket's lifecycle, for the unit tests under Node; not an API.
PolySocket._internals = {
    TRANSPORTS: TRANSPORTS, RECEIVERS: RECEIVERS, RECEIVE_MODES: RECEIVE_MODES, chooseReceiver: chooseReceiver,
    RelayState: RelayState, RELAY_TRANSITIONS: RELAY_TRANSITIONS, Relay: Relay,
    NetworkVerdicts: NetworkVerdicts, networkVerdicts: networkVerdicts, nativeVerdictKey: nativeVerdictKey,
    streamsVerdictKey: streamsVerdictKey, VERDICT_RETRY_MS: VERDICT_RETRY_MS, VERDICT_MAX_MS: VERDICT_MAX_MS
};

PolySocket._autoInstall();
