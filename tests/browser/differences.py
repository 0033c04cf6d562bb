"""The tests an engine does not run, each with its reason: the one place such exclusions live.

A test listed here is not generated for those engines (deselected at collection, never skipped),
so a run on Firefox or WebKit reports exactly what it ran. Two kinds of entries:
- the test needs something only Playwright gives (intercepting requests, evaluating in
  frames), which the WebDriver engines (Firefox, WebKit) do not have here;
- the engine behaves differently from what the test asserts, and docs/client.md's engine table
  says how and why.
A test not listed runs on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

WEBDRIVER = frozenset({"firefox", "webkit"})

ROUTE = "intercepts requests (Playwright's page.route)"
NO_PER_RUN_TRUST = ("the network matrix's TLS-intercepting cell needs the browser to trust a test CA for one run: "
                    "Chromium takes its key (--ignore-certificate-errors-spki-list); Firefox's NSS database needs "
                    "certutil (libnss3-tools, not installed) or a machine-wide policy, and no per-run trust setting "
                    "was found for WebKitGTK's MiniBrowser (docs/client.md, the networks)")


@dataclass(frozen=True)
class Exclusion:
    test: str  # "<file>::<test function>"
    engines: frozenset[str]
    reason: str
    param: str = ""  # only the test's cases with this parameter value (a network of the matrix); "": every case


EXCLUSIONS: tuple[Exclusion, ...] = (
    # test_client.py
    Exclusion("test_client.py::test_dropped_poll_answers_lose_nothing", WEBDRIVER, ROUTE),
    Exclusion("test_client.py::test_failed_sends_are_retried_without_duplicates", WEBDRIVER, ROUTE),
    Exclusion("test_client.py::test_xhr_falls_back_to_jsonp_when_cors_fails", WEBDRIVER, ROUTE),
    Exclusion("test_client.py::test_install_from_the_script_tag", WEBDRIVER,
              "evaluates in an iframe's realm (Playwright's frames)"),
    Exclusion("test_client.py::test_dead_relay_is_a_close_1006_within_its_idle_timeout", WEBDRIVER, ROUTE),
    Exclusion("test_client.py::test_batches_with_lost_answers_lose_and_double_nothing", WEBDRIVER, ROUTE),
    Exclusion("test_client.py::test_leaving_the_page_closes_relay_sockets", frozenset({"firefox"}),
              "Firefox sometimes does not send the keepalive /close started in pagehide when the page "
              "navigates away (seen in the JSONP case in 2 CI-profile runs of several); the relay then frees "
              "the socket at its idle timeout (docs/client.md, the engines)"),
    # test_conformance.py
    Exclusion("test_conformance.py::test_the_page_catches_a_difference", WEBDRIVER,
              "patches the library before the page's own scripts run (Playwright's add_init_script)"),
    # test_stream.py
    Exclusion("test_stream.py::test_streams_cut_mid_message_resume_without_loss", WEBDRIVER, ROUTE),
    Exclusion("test_stream.py::test_buffering_proxy_falls_back_to_polling", WEBDRIVER, ROUTE),
    Exclusion("test_stream.py::test_a_relay_without_streams_is_polled", WEBDRIVER, ROUTE),
    Exclusion("test_stream.py::test_a_stream_that_falls_silent_is_replaced_then_given_up", WEBDRIVER, ROUTE),
    Exclusion("test_stream.py::test_killed_relay_ends_the_stream_and_the_socket", WEBDRIVER, ROUTE),
    # test_network_verdicts.py
    Exclusion("test_network_verdicts.py::test_first_socket_falls_back_fast_then_later_ones_skip_native",
              frozenset({"webkit"}), "counts squid's CONNECT denials: WebKitGTK sends ws:// through a proxy as "
              "GET ws://... (docs/client.md, the engines)"),
    # test_network_matrix.py
    *(Exclusion(f"test_network_matrix.py::{test}", WEBDRIVER, NO_PER_RUN_TRUST, param="squid-tls")
      for test in ("test_first_and_second_socket", "test_socketio_and_mqtt_unmodified", "test_conformance_page")),
)


def exclusion(test: str, engine: str, params: tuple[object, ...] = ()) -> Exclusion | None:
    """The entry that keeps ``test`` ("<file>::<function>") off ``engine``, if any, for the case
    with these parameter values."""
    for entry in EXCLUSIONS:
        if entry.test == test and engine in entry.engines and (not entry.param or entry.param in params):
            return entry
    return None
