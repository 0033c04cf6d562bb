// The pure helpers, for the unit tests under Node (tests/test_client_units.py); not an API.
PolySocket._util = {
    charBytes: charBytes, utf8Length: utf8Length, urlCost: urlCost, toUSV: toUSV,
    splitText: splitText, splitBase64: splitBase64, base64Encode: base64Encode,
    base64Decode: base64Decode, jsonString: jsonString, parseUrlByHand: parseUrlByHand,
    clampCode: clampCode, frameJson: frameJson, SseParser: SseParser
};

PolySocket._autoInstall();
